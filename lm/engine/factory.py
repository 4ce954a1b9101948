"""``make_engine``: the right engine for a model directory and a machine.

engine = make_engine("runs/big/models/sft")            # vLLM if importable and a GPU is present
engine = make_engine("runs/tiny/models/base", prefer="torch")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm.engine.base import Engine
from lm.engine.torch_engine import TorchEngine
from lm.engine.vllm_engine import VLLMUnavailable, vllm_available

__all__ = ["VLLMUnavailable", "make_engine", "vllm_available"]


def make_engine(model_dir: str | Path, prefer: str = "auto", device: Any = None, **kwargs: Any) -> Engine:
    """An engine over a model directory: ``prefer`` is "auto" (vLLM when available, else ours), "torch"
    or "vllm" (an error if unavailable). ``device`` is a string or ``torch.device``; vLLM takes only
    the default GPU (it picks devices through CUDA_VISIBLE_DEVICES), so "auto" with another device
    uses ours. ``kwargs`` go to the chosen engine's constructor (``max_batch_size``, ``max_seq_len``
    and ``seed`` mean the same on both)."""
    if prefer not in ("auto", "torch", "vllm"):
        raise ValueError(f"prefer must be 'auto', 'torch' or 'vllm', got {prefer!r}")
    vllm_device = device is None or str(device) in ("cuda", "cuda:0")
    if prefer == "vllm" or (prefer == "auto" and vllm_device and vllm_available()):
        if not vllm_device:
            raise VLLMUnavailable(
                f"vLLM runs on the default CUDA device only, not {str(device)!r} (choose GPUs with "
                "CUDA_VISIBLE_DEVICES); use prefer='torch' for another device"
            )
        from lm.engine.vllm_engine import VLLMEngine

        return VLLMEngine(model_dir, **kwargs)
    import torch

    dev = str(device) if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev.startswith("cuda") else None
    return TorchEngine.from_pretrained(model_dir, device=dev, dtype=dtype, **kwargs)
