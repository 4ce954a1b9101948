"""Model FLOPs utilisation: achieved training FLOP/s over the device's peak.

The peak is looked up from the device's name in a table instead of being one hard-coded GPU (a
complaint about nanochat), and a stage's ``peak_flops`` (e.g. ``pretrain.peak_flops``) overrides it
for anything the table lacks. Values are dense (no 2:4 sparsity) bf16 tensor-core FLOP/s from the vendors' datasheets; where a
datasheet quotes only the sparse figure, it is halved.
"""

from __future__ import annotations

import re

# (pattern on torch.cuda.get_device_name(), dense bf16 FLOP/s, source). More specific names come
# first: the first match wins ("H100 NVL" before "H100").
PEAK_BF16_FLOPS: list[tuple[str, float, str]] = [
    (r"\bGB200\b", 2.5e15, "NVIDIA GB200 NVL72 datasheet, per GPU"),
    (r"\bB200\b", 2.25e15, "NVIDIA DGX B200 datasheet (72 PF FP8 sparse / 8 GPUs -> 2.25 PF bf16 dense)"),
    (r"\bB100\b", 1.75e15, "NVIDIA B100 (HGX B100) datasheet"),
    (r"\bH200 NVL\b", 835e12, "NVIDIA H200 NVL datasheet (1,671 TF sparse)"),
    (r"\bH200\b", 989e12, "NVIDIA H200 SXM datasheet (1,979 TF sparse)"),
    (r"\bGH200\b", 989e12, "NVIDIA GH200 datasheet"),
    (r"\bH100 NVL\b", 835e12, "NVIDIA H100 NVL datasheet (1,671 TF sparse)"),
    (r"\bH100 PCIe\b", 756e12, "NVIDIA H100 PCIe datasheet (1,513 TF sparse)"),
    (r"\bH100\b", 989e12, "NVIDIA H100 SXM datasheet (1,979 TF sparse)"),
    (r"\bH800\b", 989e12, "NVIDIA H800 SXM (H100 compute)"),
    (r"\bH20\b", 148e12, "NVIDIA H20 (296 TF sparse)"),
    (r"\bA100\b", 312e12, "NVIDIA A100 datasheet"),
    (r"\bA800\b", 312e12, "NVIDIA A800 (A100 compute)"),
    (r"\bA30\b", 165e12, "NVIDIA A30 datasheet"),
    (r"\bA10\b", 125e12, "NVIDIA A10 datasheet (250 TF sparse)"),
    (r"\bL40S\b", 362e12, "NVIDIA L40S datasheet (733 TF sparse)"),
    (r"\bL40\b", 181e12, "NVIDIA L40 datasheet (362 TF sparse)"),
    (r"\bL4\b", 121e12, "NVIDIA L4 datasheet (242 TF sparse)"),
    (r"\bRTX 4090\b", 165e12, "Ada whitepaper, bf16 with fp32 accumulate"),
    (r"\bRTX 3090\b", 71e12, "Ampere GA102 whitepaper, bf16 with fp32 accumulate"),
    (r"\bMI325X\b", 1307e12, "AMD Instinct MI325X datasheet"),
    (r"\bMI300X\b", 1307e12, "AMD Instinct MI300X datasheet"),
    (r"\bMI250X\b", 383e12, "AMD Instinct MI250X datasheet"),
]


def peak_flops_for(device_name: str) -> float | None:
    """Dense bf16 FLOP/s of one device called ``device_name``; None when the table does not know it."""
    for pattern, flops, _source in PEAK_BF16_FLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return flops
    return None


def device_peak_flops(device_type: str, override: float | None = None) -> tuple[float | None, str]:
    """(peak FLOP/s of this process's device, its name). ``override`` wins; CPUs have no table entry."""
    name = "cpu"
    if device_type == "cuda":
        import torch

        name = torch.cuda.get_device_name()
    if override is not None:
        return override, name
    return (peak_flops_for(name) if device_type == "cuda" else None), name


def mfu(
    flops_per_token: float, tokens_per_s: float, peak_flops: float | None, num_devices: int = 1
) -> float | None:
    """Fraction of the devices' peak that the model's FLOPs used (None without a peak)."""
    if not peak_flops:
        return None
    return flops_per_token * tokens_per_s / (peak_flops * num_devices)
