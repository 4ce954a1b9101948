"""The two generation endpoints: a validated request in, an OpenAI response (or its SSE stream) out.

Each handler checks the request against the model, builds the engine jobs, and waits for the first
update before answering, so a refusal (overload, a prompt the engine rejects) is still an HTTP
error status rather than a stream that breaks; after that, output goes to the client as it comes.
An error after the stream started is sent as an ``{"error": ...}`` event followed by ``[DONE]``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from serving.decode import ReplyDecoder, TokenLogprob
from serving.function_calls import (
    Functions,
    forced_call,
    forced_call_opening,
    openai_call,
    reply_calls,
    stream_ending,
)
from serving.openai_api import (
    SSE_DONE,
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIError,
    chat_chunk,
    chat_completion,
    new_id,
    sse,
    text_completion,
    usage,
)
from serving.served import ChoiceUpdate, Job, ServedModel

Answer = dict[str, Any] | AsyncIterator[str]


async def _started(updates: AsyncIterator[ChoiceUpdate]) -> tuple[ChoiceUpdate, AsyncIterator[ChoiceUpdate]]:
    """The first update (errors before any output surface here), and the rest."""
    try:
        first = await anext(updates)
    except BaseException:
        await updates.aclose()
        raise
    return first, updates


async def _all(first: ChoiceUpdate, rest: AsyncIterator[ChoiceUpdate]) -> AsyncIterator[ChoiceUpdate]:
    yield first
    async for u in rest:
        yield u


def _tokens(jobs: list[Job]) -> dict[str, int]:
    prompt = sum(len(j.prompt) for j in jobs)
    return usage(prompt, sum(len(d.token_ids) for j in jobs for d in j.decoders))


# -- /v1/chat/completions ----------------------------------------------------------------------------


async def chat_completions(
    model: ServedModel, req: ChatCompletionRequest, max_n: int, default_max: int | None
) -> Answer:
    _check_n(req.n, max_n)
    fn_tools = None if req.tool_choice == "none" else req.tools
    server_tools = model.server_tools(req.raychat_tools)
    prompt = model.chat_prompt(req.messages, fn_tools, server_tools)
    fn = Functions(
        bool(fn_tools), req.forced_function if fn_tools else None, req.parallel_tool_calls is not False
    )
    if fn.forced:  # the reply starts as that call, up to its arguments, which the model writes
        prompt = prompt + model.tokenizer.encode(forced_call_opening(fn.forced))
    params = model.sampling(req, len(prompt), default_max, req.logprobs)
    decoders = [
        model.decoder(True, req.stops, req.logprobs, calls=fn.on, in_call=bool(fn.forced))
        for _ in range(req.n)
    ]
    job = Job(prompt, params, server_tools, decoders, 0)
    first, rest = await _started(model.updates([job]))
    rid = new_id("chatcmpl")
    if req.stream:
        return _chat_stream(rid, model.name, req, job, fn, _all(first, rest))
    async for _ in _all(first, rest):
        pass
    choices = [_chat_choice(i, dec, job.finish[i], req, fn) for i, dec in enumerate(decoders)]
    extra = {"prompt_token_ids": prompt} if req.return_token_ids else None
    return chat_completion(rid, model.name, choices, _tokens([job]), extra)


def _chat_choice(
    i: int, dec: ReplyDecoder, finish: str | None, req: ChatCompletionRequest, fn: Functions
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": dec.content}
    if dec.tool_uses:
        message["raychat_tool_uses"] = [u.as_dict() for u in dec.tool_uses]
    if fn.forced:  # the reply was made that call: its arguments are all it wrote
        arguments, finish = forced_call(dec.content, finish)
        message |= {"content": None, "tool_calls": [openai_call(fn.forced, arguments)]}
    elif fn.on:
        content, calls, finish = reply_calls(dec, finish, fn.parallel)
        message["content"] = content or None if calls else content
        if calls:
            message["tool_calls"] = calls
    choice: dict[str, Any] = {
        "index": i,
        "message": message,
        "logprobs": {"content": [t.entry() for t in dec.logprobs]} if req.logprobs else None,
        "finish_reason": finish,
    }
    if req.return_token_ids:
        choice["token_ids"] = dec.token_ids
    return choice


async def _chat_stream(
    rid: str,
    name: str,
    req: ChatCompletionRequest,
    job: Job,
    fn: Functions,
    updates: AsyncIterator[ChoiceUpdate],
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(index: int, delta: dict[str, Any], lp: list[TokenLogprob], finish: str | None) -> str:
        choice = {
            "index": index,
            "delta": delta,
            "logprobs": {"content": [t.entry() for t in lp]} if req.logprobs and lp else None,
            "finish_reason": finish,
        }
        if finish is not None and req.return_token_ids:
            choice["token_ids"] = job.decoders[index].token_ids
        return sse(chat_chunk(rid, created, name, [choice]))

    for i in range(req.n):
        opening: dict[str, Any] = {"role": "assistant", "content": ""}
        if fn.forced:  # as OpenAI opens a forced call: its id and name first, the arguments after
            call = openai_call(fn.forced, "") | {"index": 0}
            opening = {"role": "assistant", "content": None, "tool_calls": [call]}
        first = chat_chunk(
            rid, created, name, [{"index": i, "delta": opening, "logprobs": None, "finish_reason": None}]
        )
        if req.return_token_ids and i == 0:
            first["prompt_token_ids"] = job.prompt
        yield sse(first)
    try:
        async for u in updates:
            piece, finish = u.piece, u.finish
            deltas: list[dict[str, Any]] = [{"content": piece.text} if piece.text else {}]
            lp = list(piece.logprobs)
            if finish is not None and fn.on:
                ending, rest, finish = stream_ending(fn, job.decoders[u.index], finish)
                lp += rest.logprobs
                if ending and "content" in ending[0]:
                    deltas[0]["content"] = deltas[0].get("content", "") + ending.pop(0)["content"]
                deltas += ending
            tool_deltas = [t.start_delta() for t in piece.tools_started]
            tool_deltas += [{"index": t.index, "result": t.result} for t in piece.tools_done]
            if tool_deltas:
                deltas[0]["raychat_tool_uses"] = tool_deltas
            deltas = [d for d in deltas if d]
            if finish is not None and (not deltas or "tool_calls" in deltas[-1]):
                deltas.append(
                    {}
                )  # the finish alone after calls, as OpenAI ends them (a client closes the last)
            for k, delta in enumerate(deltas):
                last = k == len(deltas) - 1
                yield chunk(u.index, delta, lp if k == 0 else [], finish if last else None)
        if req.include_usage:
            yield sse(chat_chunk(rid, created, name, [], _tokens([job])))
    except OpenAIError as e:
        yield sse(e.body())
    yield SSE_DONE


# -- /v1/completions ---------------------------------------------------------------------------------------


async def completions(model: ServedModel, req: CompletionRequest, max_n: int) -> Answer:
    prompts = req.prompts()
    _check_n(req.n * len(prompts), max_n, "n x prompts")
    if req.echo and req.logprobs is not None:
        raise OpenAIError(
            "echo with logprobs is not supported (prompt logprobs are not computed)", param="echo"
        )
    want_lp = req.logprobs is not None
    jobs = []
    for k, p in enumerate(prompts):
        ids = model.text_prompt(p, k)
        params = model.sampling(req, len(ids), None, want_lp)
        decoders = [model.decoder(False, req.stops, want_lp) for _ in range(req.n)]
        jobs.append(Job(ids, params, [], decoders, k * req.n))
    echoes = [_echo(model, p) if req.echo else "" for p in prompts]
    first, rest = await _started(model.updates(jobs))
    rid, created = new_id("cmpl"), int(time.time())
    if req.stream:
        return _completion_stream(rid, created, model.name, req, jobs, echoes, _all(first, rest))
    async for _ in _all(first, rest):
        pass
    choices = []
    for k, job in enumerate(jobs):
        for j, dec in enumerate(job.decoders):
            choice = {
                "index": job.first_choice + j,
                "text": echoes[k] + dec.content,
                "logprobs": _legacy_logprobs(dec.logprobs, len(echoes[k])) if want_lp else None,
                "finish_reason": job.finish[j],
            }
            if req.return_token_ids:
                choice["token_ids"] = dec.token_ids
            choices.append(choice)
    extra = {"prompt_token_ids": [j.prompt for j in jobs]} if req.return_token_ids else None
    return text_completion(rid, created, model.name, choices, _tokens(jobs), extra)


def _echo(model: ServedModel, prompt: str | list[int]) -> str:
    return prompt if isinstance(prompt, str) else model.tokenizer.decode(prompt)


def _legacy_logprobs(tokens: list[TokenLogprob], start: int) -> dict[str, Any]:
    """The completions API's logprobs: each token's text is the text it added to the choice, so
    ``tokens`` joined is exactly the choice's text (after ``start`` echoed characters) and each
    ``text_offset`` is where its token's text begins. ``top_logprobs`` is null: ``logprobs`` is 0."""
    return {
        "tokens": [t.text for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": None,
        "text_offset": [start + t.start for t in tokens],
    }


async def _completion_stream(
    rid: str,
    created: int,
    name: str,
    req: CompletionRequest,
    jobs: list[Job],
    echoes: list[str],
    updates: AsyncIterator[ChoiceUpdate],
) -> AsyncIterator[str]:
    want_lp = req.logprobs is not None
    try:
        if req.echo:
            for k, job in enumerate(jobs):
                for j in range(req.n):
                    choice = {
                        "index": job.first_choice + j,
                        "text": echoes[k],
                        "logprobs": None,
                        "finish_reason": None,
                    }
                    yield sse(text_completion(rid, created, name, [choice], None))
        async for u in updates:
            k, j = divmod(u.index, req.n)
            if not u.piece.text and u.finish is None and not u.piece.logprobs:
                continue
            lp = _legacy_logprobs(u.piece.logprobs, len(echoes[k])) if want_lp else None
            choice = {"index": u.index, "text": u.piece.text, "logprobs": lp, "finish_reason": u.finish}
            if u.finish is not None and req.return_token_ids:
                choice["token_ids"] = jobs[k].decoders[j].token_ids
            yield sse(text_completion(rid, created, name, [choice], None))
        if req.include_usage:
            yield sse(text_completion(rid, created, name, [], _tokens(jobs)))
    except OpenAIError as e:
        yield sse(e.body())
    yield SSE_DONE


def _check_n(n: int, max_n: int, what: str = "n") -> None:
    if n > max_n:
        raise OpenAIError(f"{what} is {n}; this server allows at most {max_n} choices per request", param="n")
