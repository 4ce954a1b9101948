"""One served model inside a replica: its tokenizer and chat format, its engine actor, its tools.

The replica owns one engine actor per model (``start_engine_actor``, unnamed, so it lives and dies
with the replica: no orphan holds a GPU after a downscale). Requests become prompt ids here (chat
messages through ``ChatFormat``, so text can never forge control tokens), then engine streams; the
token events of every choice go through a ``ReplyDecoder`` and come out as ``ChoiceUpdate``s, the
same for streaming and whole responses.

Freeing slots: every engine stream this module opens is closed with ``ray.cancel`` when its choices
are all done (a stop string ends a choice before the engine would) or when the consumer goes away
(the HTTP client disconnected and Serve cancelled the request): the engine actor aborts the request
at once (actors/engine_actor.py), so its KV cache slots return to the batch.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray

from actors.engine_actor import EngineActorConfig, EngineOverloaded, start_engine_actor
from lm.chat import ChatFormat, ChatFormatError, normalize_conversation
from lm.checkpoint import META_FILE, config_from_hf
from lm.engine import SamplingParams, ToolHook
from lm.files import read_json_object
from lm.tokenizer import load_tokenizer
from serving.config import EngineSettings
from serving.decode import Piece, ReplyDecoder
from serving.openai_api import OpenAIError, overloaded
from serving.resolve import ResolvedModel

MIN_TOKENS_PER_MESSAGE = 3  # <|im_start|>, the role, <|im_end|>: a floor on any message's rendering
log = logging.getLogger("raychat.serving")


@dataclass
class Job:
    """One engine request: a prompt, its sampling settings and tools, and a decoder per sample."""

    prompt: list[int]
    params: SamplingParams
    tools: list[str]
    decoders: list[ReplyDecoder]
    first_choice: int  # choice index of sample 0
    finish: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.finish = [None] * len(self.decoders)


@dataclass
class ChoiceUpdate:
    """New output of one choice; ``finish`` is set on its last update."""

    index: int
    piece: Piece
    finish: str | None = None


def engine_options(spec: EngineSettings) -> dict[str, Any]:
    """Ray options of a model's engine actor, started from inside a replica.

    A replica that Serve gave GPUs (``ray_actor_options: {num_gpus: 1}``, as
    cluster/kuberay-rayservice.yaml gives ``ChatModel``) does no GPU work itself: it lends its GPUs to
    its engines, which start on its node, ask Ray for no GPU of their own (there is none left there)
    and see the replica's through ``CUDA_VISIBLE_DEVICES``. Otherwise each engine asks for its own
    ``num_gpus`` and Ray places it."""
    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    if not gpu_ids:
        return {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus}
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    env = {"CUDA_VISIBLE_DEVICES": ",".join(gpu_ids), "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}
    return {
        "num_cpus": spec.num_cpus,
        "num_gpus": 0,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False
        ),
        "runtime_env": {"env_vars": env},
    }


class ServedModel:
    """A model as one replica serves it (module docstring)."""

    def __init__(
        self,
        model: ResolvedModel,
        tools: Mapping[str, Callable[[Any], ToolHook]],
        tools_note: str | None,
    ) -> None:
        """``tools`` are hook factories by name (each called with this model's tokenizer)."""
        self.name, self.path, self.chat = model.name, model.path, model.chat
        spec = model.spec
        self.tokenizer = load_tokenizer(model.path)
        self.chat_format = ChatFormat(self.tokenizer) if model.chat else None
        hf = read_json_object(f"{model.path}/config.json", ValueError)
        self.max_seq_len = min(spec.max_seq_len or 1 << 62, config_from_hf(hf).max_seq_len)
        meta_path = f"{model.path}/{META_FILE}"
        try:
            meta = read_json_object(meta_path, ValueError)
        except FileNotFoundError:
            meta = {}
        self.tools_note = spec.tools_note or meta.get("tools_note") or tools_note
        self.tools = sorted(tools) if model.chat else []
        config = EngineActorConfig(
            model_dir=model.path,
            engine=spec.engine,
            device=spec.device,
            max_batch_size=spec.max_batch_size,
            max_seq_len=self.max_seq_len,
            max_queued=spec.max_queued,
            engine_kwargs=spec.engine_kwargs,
        )
        options = engine_options(spec)
        self.resources = {"CPU": options["num_cpus"], "GPU": options["num_gpus"]}
        self.actor = start_engine_actor(
            config,
            tools={name: make(self.tokenizer) for name, make in tools.items() if name in self.tools},
            **options,
        )

    # -- prompts -------------------------------------------------------------------------------------

    def chat_prompt(
        self, messages: list[dict[str, Any]], fn_tools: list[dict] | None, server_tools: list[str]
    ) -> list[int]:
        """Prompt ids of a chat request; 400 for messages the chat format refuses.

        Read as OpenAI's API reads them: a conversation may end with an assistant message (the reply
        is a new assistant turn after it, not a continuation of it), and a call's ``arguments`` may
        be any string (the model's own invalid JSON, returned as written, comes back in an agent's
        next turn; it is rendered as given). The client's messages are checked before the tools note
        is added, so an error names the index the client sent."""
        if self.chat_format is None:
            raise OpenAIError(
                f"model {self.name!r} is a base model (not trained on the chat format): use /v1/completions",
                param="model",
                code="model_not_chat",
            )
        at_least = MIN_TOKENS_PER_MESSAGE * len(messages) + 1  # the reply's first token
        if at_least > self.max_seq_len:  # refused before rendering: 100,000 messages took seconds
            self._too_long(f"at least {at_least} tokens", "messages")
        try:
            conversation = normalize_conversation(
                {"messages": messages, "tools": fn_tools}, any_arguments=True
            )
            if server_tools and self.tools_note:
                conversation["messages"] = with_note(conversation["messages"], self.tools_note)
            rendered = self.chat_format.render_prompt(conversation, after_assistant=True, any_arguments=True)
        except ChatFormatError as e:
            raise OpenAIError(f"messages: {e}", param="messages") from None
        return rendered.ids

    def text_prompt(self, prompt: str | list[int], index: int) -> list[int]:
        """A completion prompt: text follows <|endoftext|> (a document start, as in pretraining) and is
        encoded as plain text; token ids are taken as they are."""
        if isinstance(prompt, str):
            return [self.tokenizer.eot_id, *self.tokenizer.encode(prompt)]
        if not prompt:  # refused here, before a stream of the other prompts has begun
            raise OpenAIError(f"prompt {index}: empty token list: give at least one token", param="prompt")
        bad = [t for t in prompt if not 0 <= t < self.tokenizer.vocab_size]
        if bad:
            raise OpenAIError(f"prompt {index}: token id {bad[0]} is outside the vocabulary", param="prompt")
        return list(prompt)

    def server_tools(self, asked: list[str] | None) -> list[str]:
        if asked is None:
            return list(self.tools)
        unknown = [t for t in asked if t not in self.tools]
        if unknown:
            have = ", ".join(self.tools) or "none"
            raise OpenAIError(
                f"server tool {unknown[0]!r} is not available for {self.name!r} (available: {have})",
                param="raychat_tools",
            )
        return list(dict.fromkeys(asked))

    def sampling(self, req: Any, prompt_len: int, default_max: int | None, logprobs: bool) -> SamplingParams:
        """SamplingParams of a request; 400 when the prompt and max_tokens do not fit the context."""
        room = self.max_seq_len - prompt_len
        asked = req.limit
        if room < 1 or (asked is not None and asked > room):
            want = f" + {asked} to generate" if asked is not None else ""
            requested = f"{prompt_len + (asked or 1)} tokens ({prompt_len} in the prompt{want})"
            self._too_long(requested, "messages" if self.chat and hasattr(req, "messages") else "prompt")
        max_tokens = asked or min(room, default_max or room)
        stops = list(self.chat_format.stop_token_ids) if self.chat_format else []
        if req.ignore_eos:  # the end of a turn is this model's end of text: ignored too, as asked
            stops = []
        top_p, top_k = req.truncation
        return SamplingParams(
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=top_p,
            top_k=top_k,
            max_tokens=max_tokens,
            n=req.n,
            seed=req.engine_seed,
            logprobs=logprobs,
            ignore_eos=req.ignore_eos,
            stop_token_ids=stops,
        )

    def _too_long(self, requested: str, param: str) -> None:
        raise OpenAIError(
            f"This model's maximum context length is {self.max_seq_len} tokens. However, you requested "
            f"{requested}. Please reduce the length of the messages or the completion.",
            param=param,
            code="context_length_exceeded",
        )

    def decoder(
        self, chat: bool, stops: Sequence[str], logprobs: bool, calls: bool = False, in_call: bool = False
    ) -> ReplyDecoder:
        return ReplyDecoder(self.tokenizer, chat, stops, logprobs, calls=calls, in_call=in_call)

    # -- generation ----------------------------------------------------------------------------------

    async def updates(self, jobs: list[Job]) -> AsyncIterator[ChoiceUpdate]:
        """Every choice's output as it comes, for all jobs at once; OpenAIError when the engine refuses
        a request (raised before any update, so the caller can still answer with an error status)."""
        queue: asyncio.Queue = asyncio.Queue()
        streams: list[Any] = [None] * len(jobs)
        tasks = [asyncio.create_task(self._pump(i, job, streams, queue)) for i, job in enumerate(jobs)]
        running = len(tasks)
        try:
            while running:
                item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for t in tasks:
                t.cancel()
            for s in streams:
                if s is not None:
                    ray.cancel(s)  # the engine actor aborts the request: its slots return at once

    async def _pump(self, i: int, job: Job, streams: list[Any], queue: asyncio.Queue) -> None:
        rid = f"{self.name}-{uuid.uuid4().hex}"
        try:
            gen = self.actor.stream.remote(job.prompt, job.params, request_id=rid, tools=job.tools)
            streams[i] = gen
            async for ref in gen:
                for update in self._apply(job, await ref):
                    queue.put_nowait(update)
                if all(f is not None for f in job.finish):
                    break
            for j, f in enumerate(job.finish):  # the stream ended without a last event (should not happen)
                if f is None:
                    job.finish[j] = "stop"
                    queue.put_nowait(ChoiceUpdate(job.first_choice + j, job.decoders[j].finish(), "stop"))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - handed to the consumer as an OpenAIError
            queue.put_nowait(engine_error(e, self.name))
        finally:
            if streams[i] is not None:
                ray.cancel(streams[i])
            queue.put_nowait(None)

    def _apply(self, job: Job, events: list[Any]) -> list[ChoiceUpdate]:
        out = []
        for e in events:
            j = e.sample_index
            if job.finish[j] is not None:
                continue
            dec = job.decoders[j]
            piece = Piece()
            if e.token_id is not None:
                is_stop = e.finish_reason == "stop"
                lp = e.logprob if e.logprob is not None else e.sampled_logprob
                piece = dec.feed(e.token_id, lp, is_stop=is_stop)
            finish = e.finish_reason
            if dec.stopped:
                finish = "stop"
            if finish is not None:
                tail = dec.finish()
                piece.text += tail.text
                piece.logprobs += tail.logprobs
                job.finish[j] = "stop" if finish in ("stop", "tool_error") else "length"
                out.append(ChoiceUpdate(job.first_choice + j, piece, job.finish[j]))
            elif piece:
                out.append(ChoiceUpdate(job.first_choice + j, piece))
        return out

    async def stats(self) -> dict[str, Any]:
        return await self.actor.stats.remote()


def with_note(messages: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    """The messages with the tools note in the first system message (added when there is none), as
    the SFT data puts it (pipelines/sft/world_data.py: system texts joined by newlines)."""
    first = messages[0] if messages else None
    if isinstance(first, dict) and first.get("role") in ("system", "developer"):
        content = first.get("content")
        if isinstance(content, str):
            if note in content:
                return messages
            return [{**first, "content": f"{content}\n{note}" if content else note}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def engine_error(e: BaseException, model: str) -> OpenAIError:
    """What the engine actor raised, as the client should see it."""
    if isinstance(e, OpenAIError):
        return e
    if isinstance(e, EngineOverloaded):
        return overloaded(f"model {model!r} is at capacity; retry shortly")
    if isinstance(e, ray.exceptions.RayActorError):
        return OpenAIError(
            f"the engine of {model!r} is unavailable; retry shortly",
            503,
            "server_error",
            code="engine_unavailable",
        )
    cause = getattr(e, "cause", None)
    if isinstance(cause, ValueError) or isinstance(e, ValueError):
        return OpenAIError(str(cause or e).splitlines()[0], param=None)
    log.error("engine request failed: %s", e)
    return OpenAIError(f"generation failed: {type(cause or e).__name__}", 500, "server_error")
