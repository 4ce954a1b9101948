"""GRPO on GPUs: the prepared check for a machine with CUDA (skipped without one).

    pip install -e '.[dev,gpu]'
    RAY_AUTH_MODE=disabled pytest -q tests/test_grpo_gpu.py            # about 5 minutes on one GPU

- one GPU: the toy task of tests/test_grpo.py with the generator (TorchEngine on CUDA, and vLLM when
  installed), the learner and the reference sharing the GPU (fractional bundles); the reward rises;
- two GPUs or more: generator and learner on their own GPUs, weights by an NCCL broadcast
  (``weight_sync: collective``), and the generator's weights after a step equal the learner's.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

from test_grpo import check_accounting, make_toy, toy_config, weight_sync_round_trip  # noqa: E402


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("toy"))


GPU_POOLS = {
    "generators": {"num_cpus": 0.5, "num_gpus": 0.4, "max_batch_size": 32, "prompts_in_flight": 2},
    "learner": {"lr": 3e-3, "num_cpus": 0.5, "num_gpus": 0.4},
    "reference": {"num_cpus": 0.25, "num_gpus": 0.1},
}


@pytest.mark.parametrize(
    "engine",
    [
        "torch",
        pytest.param(
            "vllm",
            marks=pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed"),
        ),
    ],
)
def test_grpo_on_one_gpu_raises_the_reward(ray_session, toy, tmp_path, engine: str) -> None:
    from pipelines.grpo.job import run

    pools = json.loads(json.dumps(GPU_POOLS))
    pools["generators"]["engine"] = engine
    if engine == "vllm":
        pools["generators"]["engine_kwargs"] = {"gpu_memory_utilization": 0.25, "enforce_eager": True}
    numbers = run(toy_config(toy, tmp_path, **pools))
    assert numbers["reward_last_steps"] > numbers["reward_first_steps"] + 0.2, numbers
    check_accounting(tmp_path, 8, 4, 8, bound=1)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs the two members on two GPUs")
def test_nccl_broadcast_gives_the_generator_the_learners_weights(ray_session, toy) -> None:
    weight_sync_round_trip(toy, backend_gpus=1)
