"""Tool calls in the middle of generation, the same on every engine.

A ``ToolHook`` watches for its closing token (``<|search_end|>``); the tokens since the latest opening
token (``<|search_start|>``) go to its callback, and the tokens the callback returns are appended to
the sample unsampled (``forced``, no logprob; training masks them) and run through the model like a
prompt, so generation continues after them.

A callback may answer at once (a list of token ids) or later: it may return a
``concurrent.futures.Future`` of the token ids (``ray.ObjectRef.future()`` is one), for a tool that
calls another process, such as a search actor. While a reply is outstanding only that sample waits:
the engine keeps stepping the others, so a slow tool never stalls the batch, and after
``ToolHook.timeout_s`` the sample ends with finish reason "tool_error". A callback that answers at
once runs inside the engine's step, so it must be quick (a calculator, a lookup in memory).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from lm.engine.types import Request

ToolReply = Sequence[int] | Future


@dataclass(frozen=True)
class ToolHook:
    """Intercept a tool call: ``<open> ... <close>`` in the output triggers ``callback``.

    ``callback(request, ids_between)`` gets the tokens strictly between the latest ``open_token_id`` and
    the ``close_token_id`` just sampled, and returns the tokens to append (for example
    ``<|result_start|> ... <|result_end|>``), or a Future of them. A call's body holds no control
    token: another hook's opening or closing token, or one of ``breaks`` (the tokenizer's special
    tokens), after the opening token abandons that call, so a closing token then is an ordinary token,
    as is one with no opening token before it. That is how lm/chat.py's ``parse_assistant`` and the
    server's reply decoder read a reply, so the calls run are the calls they report. If the callback
    raises, its Future fails, or no reply comes within ``timeout_s`` seconds (None: wait for ever), the
    sample ends with finish_reason "tool_error".
    """

    open_token_id: int
    close_token_id: int
    callback: Callable[[Request, list[int]], ToolReply]
    timeout_s: float | None = 60.0
    breaks: frozenset[int] = frozenset()


class ToolError(Exception):
    """A tool call failed; the sample ends with finish_reason "tool_error" and this message."""


class ToolCall:
    """One call in progress: its reply (tokens, or a Future of them) and its deadline."""

    def __init__(self, hook: ToolHook, reply: ToolReply | BaseException) -> None:
        self.hook = hook
        self.reply = reply
        self.deadline = None if hook.timeout_s is None else time.monotonic() + hook.timeout_s

    @property
    def future(self) -> Future | None:
        return self.reply if isinstance(self.reply, Future) else None

    def poll(self, vocab_size: int | None) -> list[int] | None:
        """The tokens to inject once the reply is there, None while it is not; ToolError on failure."""
        reply = self.reply
        if isinstance(reply, Future):
            if not reply.done():
                if self.deadline is not None and time.monotonic() > self.deadline:
                    reply.cancel()
                    raise ToolError(f"TimeoutError: no tool reply within {self.hook.timeout_s} s")
                return None
            try:
                reply = reply.result()
            except BaseException as e:  # noqa: BLE001 - a failed tool ends its sample, whatever it raised
                raise ToolError(f"{type(e).__name__}: {e}") from e
        if isinstance(reply, BaseException):
            raise ToolError(f"{type(reply).__name__}: {reply}") from reply
        try:
            tokens = [int(t) for t in reply]
        except (TypeError, ValueError) as e:
            raise ToolError(f"tool returned {type(reply).__name__}, not token ids: {e}") from e
        bad = [t for t in tokens if vocab_size is not None and not 0 <= t < vocab_size]
        if bad:
            raise ToolError(
                f"ValueError: tool returned token id {bad[0]} outside the vocabulary [0, {vocab_size})"
            )
        return tokens


def start_tool_call(request: Request, token: int) -> ToolCall | None:
    """The call ``token`` (just appended to ``request``) makes, or None if it closes no call.

    The callback runs here; an exception it raises is kept in the call and reported by ``poll``.
    """
    hook = next((h for h in request.tool_hooks if h.close_token_id == token), None)
    if hook is None:
        return None
    controls = hook.breaks.union(*((h.open_token_id, h.close_token_id) for h in request.tool_hooks))
    seq = request.prompt_ids + request.token_ids
    open_at = None
    for i in range(len(seq) - 2, -1, -1):
        if seq[i] == hook.open_token_id:
            open_at = i
            break
        if seq[i] in controls:
            return None  # a stray closing token, or a call another control token abandoned
    if open_at is None:
        return None
    try:
        reply: ToolReply | BaseException = hook.callback(request, seq[open_at + 1 : -1])
    except Exception as e:  # a tool failure ends this sample only
        reply = e
    return ToolCall(hook, reply)


class _Tokenizes(Protocol):
    @property
    def special_tokens(self) -> dict[str, int]: ...
    def token_id(self, special: str) -> int: ...
    def encode(self, text: str, allow_special: bool = False) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


def text_tool(
    tokenizer: _Tokenizes,
    open_token: str,
    close_token: str,
    answer: Callable[[str], str | Future],
    result_tokens: tuple[str, str] | None = ("<|result_start|>", "<|result_end|>"),
    timeout_s: float | None = 60.0,
) -> ToolHook:
    """A ``ToolHook`` that speaks text: ``answer`` gets the decoded text between the special tokens
    ``open_token`` and ``close_token`` and returns the tool's reply as text (or a Future of it), which
    is encoded and, when ``result_tokens`` names a pair, wrapped in them (``<|result_start|> ...
    <|result_end|>``).

        search = text_tool(tok, "<|search_start|>", "<|search_end|>", lambda q: index.lookup(q))
        remote = text_tool(tok, "<|search_start|>", "<|search_end|>", lambda q: actor.search.remote(q).future())
        engine.generate(prompts, params, tool_hooks=[search])

    Special tokens inside the reply are encoded as plain text, so a tool can never forge them.
    """
    head, tail = (
        ([tokenizer.token_id(result_tokens[0])], [tokenizer.token_id(result_tokens[1])])
        if result_tokens
        else ([], [])
    )

    def wrap(text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"tool answered {type(text).__name__}, not text")
        return head + tokenizer.encode(text) + tail

    def callback(request: Request, between: list[int]) -> ToolReply:
        reply = answer(tokenizer.decode(between))
        if not isinstance(reply, Future):
            return wrap(reply)
        tokens: Future = Future()

        def done(f: Future) -> None:
            try:
                tokens.set_result(wrap(f.result()))
            except BaseException as e:  # noqa: BLE001 - handed to the engine, which ends the sample
                tokens.set_exception(e)

        reply.add_done_callback(done)
        return tokens

    breaks = frozenset(tokenizer.special_tokens.values())
    return ToolHook(
        tokenizer.token_id(open_token), tokenizer.token_id(close_token), callback, timeout_s, breaks
    )
