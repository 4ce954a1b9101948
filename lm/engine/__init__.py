"""Generation over token ids: one ``Engine`` interface, our ``TorchEngine``, ``VLLMEngine``, a factory.

    from lm.engine import SamplingParams, TorchEngine, make_engine, text_tool

    engine = make_engine("runs/tiny/models/base")   # vLLM on a GPU with vLLM installed, else ours
    results = engine.generate([[1, 2, 3]], SamplingParams(temperature=0.8, max_tokens=32, n=4, seed=1))

Modules, each with one job:
- base.py: the ``Engine`` interface (request loop, ``generate``/``stream`` written once over it,
  ``update_weights`` and what happens to requests in flight);
- types.py: results, token events, a request in flight, load and counters;
- sampling.py: ``SamplingParams`` and the batched sampler (which logprobs are reported, and why);
- tools.py: tool hooks (``ToolHook``, ``text_tool``), synchronous or answered later through a Future;
- torch_engine.py + fused_forward.py: ``TorchEngine``, ours (KV cache slots, continuous batching);
- vllm_engine.py: ``VLLMEngine`` on vLLM's request loop (GPU only);
- factory.py: ``make_engine``.
Everything here works in token ids; rendering text (chat templates, special tokens) is the chat
layer's job. Nothing here imports Ray: actors/engine_actor.py runs an engine inside a Ray actor.
"""

from lm.engine.base import Engine, InFlight, Weights
from lm.engine.factory import VLLMUnavailable, make_engine, vllm_available
from lm.engine.sampling import SamplingParams
from lm.engine.tools import ToolError, ToolHook, text_tool
from lm.engine.torch_engine import TorchEngine
from lm.engine.types import (
    EngineCounters,
    EngineLoad,
    FinishReason,
    GenerationResult,
    Request,
    TokenEvent,
    eos_token_ids_of,
)
from lm.engine.vllm_engine import VLLMEngine

__all__ = [
    "Engine",
    "EngineCounters",
    "EngineLoad",
    "FinishReason",
    "GenerationResult",
    "InFlight",
    "Request",
    "SamplingParams",
    "TokenEvent",
    "ToolError",
    "ToolHook",
    "TorchEngine",
    "VLLMEngine",
    "VLLMUnavailable",
    "Weights",
    "eos_token_ids_of",
    "make_engine",
    "text_tool",
    "vllm_available",
]
