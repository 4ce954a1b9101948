"""The OpenAI API's shapes: requests (validated with pydantic), errors, response bodies and SSE chunks.

No Ray and no engine here: serving/app.py parses with ``parse_request`` and answers with the builders.

What follows OpenAI, and where raychat differs (the README's serving section says the same):
- Errors are ``{"error": {"message", "type", "param", "code"}}`` with the HTTP status OpenAI uses:
  400 for a bad body or value (``invalid_request_error``, ``param`` naming the field), 401 for a
  missing or wrong key, 404 for an unknown model (``model_not_found``), 413 for a huge body, 503 when
  the engine is full (``server_overloaded``, with ``Retry-After``).
- Unknown request fields are accepted and ignored, as vLLM does, with one warning line per request
  naming them (the ``raychat.serving`` logger): clients send fields of newer versions of the spec
  (``reasoning_effort``, ``verbosity``, ``prediction``...) and other servers' extras
  (``repetition_penalty``, ``min_p``, ``chat_template_kwargs``, Open WebUI's ``keep_alive``...).
  Fields that change nothing here (``user``, ``store``, ``metadata``, ``service_tier``,
  ``safety_identifier``, ``prompt_cache_key``, ``prompt_cache_retention``, ``modalities: ["text"]``,
  ``stream_options.include_obfuscation``) are ignored without a warning but still checked as OpenAI
  checks them (``parallel_tool_calls: false`` keeps a reply's first call only). Known settings this
  server cannot honour (penalties, ``logit_bias``, ``top_logprobs`` > 0, ``suffix``, ``best_of`` !=
  n, ``tool_choice: "required"`` over several tools, a ``response_format`` other than text, the
  deprecated ``functions``/``function_call``: send ``tools``) are refused rather than ignored, with
  ``param`` naming the field.
- ``seed`` is any int64 (a negative seed samples as ``seed mod 2**63``); ``top_p`` 0 keeps only the
  most likely token (the engine is asked for ``top_k`` 1: its nucleus needs ``top_p`` > 0).
- ``tool_choice`` naming a function (or ``"required"`` with one tool) makes the reply that call: the
  reply is started with the call's opening and the function's name, and the model writes the
  arguments (not constrained to the schema: OpenAI's own warning that arguments may not be valid
  JSON applies, and they are returned as the model wrote them).
- Extensions (vLLM's names where vLLM has one): ``top_k``, ``ignore_eos``, ``return_token_ids``
  (prompt and output token ids in the response), and ``raychat_tools`` (which server-side tools a
  chat model may call: ``["search", "calculator"]``; default all that the server has).
- Server-side tool calls are reported as ``raychat_tool_uses`` on the message (and on stream deltas,
  merged by ``index`` as OpenAI's own ``tool_calls`` deltas are), not as ``tool_calls``: OpenAI's
  ``tool_calls`` ask the client to run a function and answer with a ``tool`` message, while these
  already ran on the server and their results are part of the reply. A client that put them in
  ``tool_calls`` would run them again.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

MAX_STOP = 16
REQUIRED = frozenset({"model", "messages", "prompt"})
MAX_STOP_CHARS = 256
ENGINE_SEEDS = 2**63  # the engine's seeds are 0 .. 2**63-1 (sample j adds j; torch takes up to 2**64-1)
# unknown fields are kept (not refused) so that they can be named in one warning, then ignored
LENIENT = ConfigDict(extra="allow")
log = logging.getLogger("raychat.serving")


class OpenAIError(Exception):
    """An error answered in OpenAI's shape; ``status`` is the HTTP status."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.type, self.param, self.code = message, status, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def overloaded(message: str) -> OpenAIError:
    return OpenAIError(message, 503, "server_error", code="server_overloaded", headers={"Retry-After": "1"})


class StreamOptions(BaseModel):
    model_config = LENIENT
    include_usage: bool = False
    include_obfuscation: bool | None = None  # OpenAI's padding of stream events: none here


FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's rule for a function's name
METADATA_LIMITS = (16, 64, 512)  # OpenAI's: pairs, characters of a key, of a value


class NamedFunction(BaseModel):
    model_config = LENIENT
    name: str


class NamedToolChoice(BaseModel):
    """``{"type": "function", "function": {"name": ...}}``: the reply must call this function."""

    model_config = LENIENT
    type: Literal["function"]
    function: NamedFunction


class _Sampling(BaseModel):
    """Fields both endpoints share."""

    model_config = LENIENT

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1, description="vLLM's extension; 0 or -1 = off")
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    ignore_eos: bool = False
    return_token_ids: bool = False
    # accepted and ignored, but checked as OpenAI checks them (a wrong type was a silent 200)
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        pairs, key_chars, value_chars = METADATA_LIMITS
        if v and (len(v) > pairs or any(len(k) > key_chars or len(x) > value_chars for k, x in v.items())):
            raise ValueError(
                f"at most {pairs} pairs, keys of at most {key_chars} and values of {value_chars} characters"
            )
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str] | None:
        stops = [v] if isinstance(v, str) else v
        if stops is None:
            return None
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"each stop sequence must have 1 to {MAX_STOP_CHARS} characters")
        return stops

    @field_validator("presence_penalty", "frequency_penalty", "logit_bias")
    @classmethod
    def _unsupported(cls, v: Any) -> Any:
        if v:
            raise ValueError("not supported by this server (leave it unset)")
        return v

    @field_validator("stream_options")
    @classmethod
    def _stream_options(cls, v: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if v is not None and not info.data.get("stream"):  # stream is declared before: validated first
            raise ValueError("only allowed when stream is true")
        return v

    @property
    def stops(self) -> list[str]:
        return list(self.stop or [])  # type: ignore[arg-type]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def engine_seed(self) -> int | None:
        """The engine's seed: the same for the same request seed, a negative one taken mod 2**63."""
        return None if self.seed is None else self.seed % ENGINE_SEEDS

    @property
    def truncation(self) -> tuple[float, int]:
        """The engine's ``(top_p, top_k)``: ``top_p`` 0 (OpenAI's API allows it) means the most likely
        token only, which the engine's nucleus cannot say (it needs ``top_p`` > 0; vLLM's too): top-k 1."""
        top_k = max(self.top_k or 0, 0)
        if self.top_p == 0:
            return 1.0, 1
        return (1.0 if self.top_p is None else self.top_p), top_k


class ChatCompletionRequest(_Sampling):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    modalities: list[Literal["text"]] | None = None
    response_format: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None  # OpenAI's deprecated form of tools: refused
    function_call: str | dict[str, Any] | None = None
    raychat_tools: list[str] | None = None

    @field_validator("tools")
    @classmethod
    def _function_tools(cls, tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        """OpenAI's shape, checked as OpenAI does: anything else would go into the prompt verbatim."""
        for i, tool in enumerate(tools or []):
            fn = tool.get("function")
            if (
                tool.get("type") != "function"
                or not isinstance(fn, dict)
                or not isinstance(fn.get("name"), str)
            ):
                raise ValueError(
                    f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., ...}}}}"
                )
            if not FUNCTION_NAME.fullmatch(fn["name"]):
                raise ValueError(
                    f"tools[{i}].function.name {fn['name'][:80]!r} must be 1 to 64 letters, digits, '_' or '-'"
                )
        return tools

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v:
            raise ValueError("> 0 is not supported: the engine reports the chosen token's logprob")
        if v is not None and not info.data.get("logprobs"):
            raise ValueError("needs logprobs: true")
        return v

    @field_validator("response_format")
    @classmethod
    def _response_format(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and v.get("type") != "text":
            raise ValueError("only {'type': 'text'} is supported (the output cannot be constrained here)")
        return v

    @field_validator("functions", "function_call")
    @classmethod
    def _deprecated_functions(cls, v: Any) -> Any:
        """Ignoring them would answer an agent with plain text where it asked for a call: refused,
        pointing at ``tools``, the form of the same API this server speaks ("none"/"auto" alone and
        an empty list ask for nothing)."""
        if v not in ([], "none", "auto"):
            raise ValueError(
                "the deprecated functions API is not supported: declare the functions in 'tools' "
                "(and choose one with 'tool_choice')"
            )
        return v

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, choice: Any, info: ValidationInfo) -> Any:
        tools = info.data.get("tools")  # validated first: declared before
        if choice not in (None, "none", "auto") and not tools:  # "auto"/"none" alone: harmless, accepted
            raise ValueError("a tool_choice that calls a tool needs tools")
        names = [t["function"]["name"] for t in tools or ()]
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"it names function {choice.function.name!r}, which is not in tools")
        if choice == "required" and len(names) > 1:
            raise ValueError(
                "'required' over several tools is not supported (the reply's function cannot be "
                "constrained here): name the function, {'type': 'function', 'function': {'name': ...}}"
            )
        return choice

    @property
    def forced_function(self) -> str | None:
        """The function the reply must call: the one named by ``tool_choice``, or the only tool when
        ``tool_choice`` is ``"required"``."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.function.name
        if self.tool_choice == "required" and self.tools:
            return self.tools[0]["function"]["name"]
        return None

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    @field_validator("logprobs")
    @classmethod
    def _logprobs(cls, v: int | None) -> int | None:
        if v:
            raise ValueError("> 0 is not supported: the engine reports the chosen token's logprob (use 0)")
        return v

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("not supported by this server")
        return v

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and v != info.data.get("n", 1):  # n is declared before: validated first
            raise ValueError("other than n is not supported")
        return v

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("must not be an empty list")
        return v

    @property
    def limit(self) -> int | None:
        return self.max_tokens

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


def parse_request(raw: bytes, kind: type[_Sampling]) -> Any:
    """The request body as ``kind``, or an OpenAIError (400) naming the field that is wrong."""
    try:
        data = json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise OpenAIError("the request body is not valid JSON here: nested too deeply") from None
    except ValueError as e:  # bad JSON, bad UTF-8, NaN, an integer of more than 4300 digits
        why = "a number has more than 4300 digits" if "max_str_digits" in str(e) else str(e)
        raise OpenAIError(f"the request body is not valid JSON: {why}") from None
    if not isinstance(data, dict):
        raise OpenAIError("the request body must be a JSON object")
    # null means "the default" for every optional field, as in OpenAI's API ("n": null, "stream": null,
    # "max_tokens": null from clients that send every key); the required ones stay and are refused
    data = {k: v for k, v in data.items() if v is not None or k in REQUIRED}
    try:  # strict, as OpenAI is: "stream": "yes", "max_tokens": true or "10" are refused, not coerced
        request = kind.model_validate(data, strict=True)
    except ValidationError as e:
        raise _validation_error(e) from None
    if unknown := ignored_fields(request):
        log.warning("request fields ignored (not used by this server): %s", _listed(unknown))
    return request


def _listed(names: list[str], most: int = 20) -> str:
    """Names as a log line may show them: quoted (a key holding a newline cannot forge a line), and
    at most ``most`` of them (a body of 100,000 keys is one short line)."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(repr(n[:100]) for n in names[:most]) + more


def ignored_fields(model: BaseModel, prefix: str = "") -> list[str]:
    """The fields of a parsed request this server does not know, nested ones as ``a.b``."""
    names = [prefix + name for name in model.model_extra or {}]
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            names += ignored_fields(value, f"{prefix}{name}.")
    return names


def _not_json(word: str) -> Any:
    """Python's json reads NaN and Infinity, which JSON has not: "temperature": NaN was then refused as
    out of range, as if it were a number."""
    raise ValueError(f"{word} is not a JSON value")


def _validation_error(e: ValidationError) -> OpenAIError:
    first = e.errors()[0]
    loc = [str(p) for p in first["loc"]]
    # union members add their type names to the location (prompt.str, prompt.list[int]...): drop them
    path = [p for p in loc if not any(c in p for c in "[]") and p not in ("str", "int", "float", "bool")]
    param = ".".join(path) or None
    kind = first["type"]
    if kind == "missing":
        message = f"Missing required parameter: '{param}'."
    else:
        msg = first["msg"].removeprefix("Value error, ")
        message = f"Invalid value for '{param}': {msg}." if param else f"{msg}."
    more = len(e.errors()) - 1
    if more:
        message += f" ({more} more problem{'s' if more > 1 else ''} in the request)"
    return OpenAIError(message, param=param, code="invalid_value" if kind != "missing" else None)


# -- responses -------------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(
    rid: str, model: str, choices: list[dict[str, Any]], use: dict[str, int], extra: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": use,
        **(extra or {}),
    }


def chat_chunk(
    rid: str, created: int, model: str, choices: list[dict[str, Any]], use: dict[str, int] | None = None
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": use,
    }


def text_completion(
    rid: str,
    created: int,
    model: str,
    choices: list[dict[str, Any]],
    use: dict[str, int] | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": use,
        **(extra or {}),
    }


def model_card(name: str, created: int, chat: bool, max_seq_len: int, tools: list[str]) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "raychat",
        "max_model_len": max_seq_len,  # vLLM's field name
        "raychat": {"chat": chat, "endpoints": _endpoints(chat), "server_tools": tools},
    }


def _endpoints(chat: bool) -> list[str]:
    return ["/v1/chat/completions", "/v1/completions"] if chat else ["/v1/completions"]


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event (``data: ...`` and a blank line)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n"


SSE_DONE = sse("[DONE]")
