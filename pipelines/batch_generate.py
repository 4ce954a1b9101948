"""Batch generation on Ray Data: one ``map_batches`` UDF for "I don't know" probing (k samples per
question), evaluation and rejection sampling for distillation.

    ds = ray.data.from_items([{"id": "q1", "prompt_ids": [50256, 464, 3139]}, ...])
    out = generate_dataset(ds, SamplingParams(temperature=0.8, n=4, max_tokens=64), actor=engine_actor)
    out = generate_dataset(ds, SamplingParams(temperature=0), model_dir="runs/tiny/models/sft")

Each input row becomes ``n`` output rows (its sample 0..n-1), with every input column kept and
``sample_index``, ``token_ids``, ``forced``, ``finish_reason``, ``error``, ``policy_version`` and,
when ``params.logprobs`` is on, ``logprobs`` and ``sampled_logprobs`` added. A row the engine refuses
(empty, longer than the context, ids outside the vocabulary) is kept as one row with finish_reason
"invalid" and the reason in ``error``; the rest of its batch is generated as usual. A ``seed`` column, when
present, seeds each row's request (sample j uses seed + j), so a rerun reproduces its samples.

Two ways to run, one UDF:
- ``actor=``: the rows go to an engine actor (actors/engine_actor.py), shared with whatever else uses it
  (a GRPO step, a Serve replica); the UDF runs as light Ray tasks (``num_cpus`` 0.25 by default) and
  waits out ``EngineOverloaded`` with a backoff instead of failing the batch;
- ``model_dir=``: each UDF actor owns an engine (``make_engine``), for an offline job on its own nodes.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from lm.engine import GenerationResult, SamplingParams

OVERLOAD_WAIT_S = (0.05, 2.0)  # first and longest wait between retries when the engine actor is full


class GenerateBatch:
    """The ``map_batches`` UDF (a callable class: Ray Data builds it once per UDF actor)."""

    def __init__(
        self,
        params: SamplingParams | dict[str, Any],
        actor: Any = None,
        model_dir: str | None = None,
        engine: str = "auto",
        engine_kwargs: dict[str, Any] | None = None,
        prompt_column: str = "prompt_ids",
        tools: Sequence[str] = (),
        overload_timeout_s: float = 600.0,
    ) -> None:
        """``actor`` is an engine actor handle or its name; otherwise ``model_dir`` (with ``engine`` and
        ``engine_kwargs`` for ``make_engine``) gives this UDF its own engine. ``tools`` name tools
        configured on the engine actor."""
        if (actor is None) == (model_dir is None):
            raise ValueError("give exactly one of actor= (an engine actor or its name) and model_dir=")
        self.params = params if isinstance(params, SamplingParams) else SamplingParams(**params)
        self.prompt_column = prompt_column
        self.tools = list(tools)
        self.overload_timeout_s = overload_timeout_s
        self.actor = None
        self.engine = None
        if actor is not None:
            import ray

            self.actor = ray.get_actor(actor) if isinstance(actor, str) else actor
        else:
            if self.tools:
                raise ValueError("tools= names tools of an engine actor; with model_dir= there are none")
            from lm.engine import make_engine

            self.engine = make_engine(model_dir, prefer=engine, **(engine_kwargs or {}))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        if self.prompt_column not in batch:
            raise KeyError(f"batch has no {self.prompt_column!r} column (columns: {sorted(batch)})")
        prompts = [[int(t) for t in p] for p in batch[self.prompt_column]]
        if "seed" in batch:
            params = [self.params.model_copy(update={"seed": int(s)}) for s in batch["seed"]]
        else:
            params = [self.params] * len(prompts)
        results = self._generate_rows(prompts, params)
        rows = [int(r.request_id) for r in results]
        out: dict[str, list] = {name: [values[i] for i in rows] for name, values in batch.items()}
        out["sample_index"] = [r.sample_index for r in results]
        out["token_ids"] = [r.token_ids for r in results]
        out["forced"] = [r.forced for r in results]
        out["finish_reason"] = [r.finish_reason for r in results]
        out["error"] = [r.error for r in results]
        out["policy_version"] = [r.policy_version for r in results]
        if self.params.logprobs:
            out["logprobs"] = [r.logprobs for r in results]
            out["sampled_logprobs"] = [r.sampled_logprobs for r in results]
        return out

    def _generate_rows(
        self, prompts: list[list[int]], params: list[SamplingParams]
    ) -> list[GenerationResult]:
        """Results of the batch; a row the engine refuses (an empty or too long prompt, a token outside
        the vocabulary) gets one result with finish_reason "invalid" and the reason, and the other rows
        are generated as usual."""
        try:
            return self._generate(prompts, params)
        except ValueError:
            pass
        results: list[GenerationResult] = []
        for i, (prompt, p) in enumerate(zip(prompts, params, strict=True)):
            try:
                one = self._generate([prompt], [p])
            except ValueError as e:
                one = [GenerationResult(0, prompt, [], None, [], "invalid", error=f"ValueError: {e}")]
            results += [dataclasses.replace(r, request_id=i) for r in one]
        return results

    def _generate(self, prompts: list[list[int]], params: list[SamplingParams]) -> list[GenerationResult]:
        if self.engine is not None:
            return self.engine.generate(prompts, params)
        import ray

        from actors.engine_actor import EngineOverloaded

        wait, give_up = OVERLOAD_WAIT_S[0], time.monotonic() + self.overload_timeout_s
        while True:
            try:
                return ray.get(self.actor.generate.remote(prompts, params, tools=self.tools))
            except EngineOverloaded:
                if time.monotonic() > give_up:
                    raise
                time.sleep(wait)
                wait = min(2 * wait, OVERLOAD_WAIT_S[1])


def generate_on_actor(batch: dict[str, np.ndarray], **udf_kwargs: Any) -> dict[str, list]:
    """The UDF as a plain function, for ``actor=``: it holds no state (the engine actor does the work)."""
    return GenerateBatch(**udf_kwargs)(batch)


def generate_dataset(
    ds,
    params: SamplingParams,
    *,
    actor: Any = None,
    model_dir: str | None = None,
    batch_size: int = 16,
    concurrency: int = 1,
    num_cpus: float | None = None,
    num_gpus: float = 0,
    **udf_kwargs: Any,
):
    """``ds`` with generations added (module docstring), ``batch_size`` prompts a request.

    With an engine actor, at most ``concurrency`` Ray tasks send batches to it (``num_cpus`` 0.25 by
    default: the work happens in the actor). Tasks, not an actor pool: the UDF holds nothing, and an
    actor pool is new processes for every dataset, which re-import torch. An evaluation runs a dataset
    per condition, so that cost several seconds each (about 6 s for 12 prompts on a 2-core machine; a
    task on a warm worker starts in milliseconds). With ``model_dir`` each of ``concurrency`` UDF actors
    owns an engine (``num_cpus`` 1 by default, ``num_gpus`` for a GPU engine)."""
    import ray

    kwargs = {"params": params, "actor": actor, "model_dir": model_dir, **udf_kwargs}
    if actor is not None:
        return ds.map_batches(
            generate_on_actor,
            fn_kwargs=kwargs,
            batch_size=batch_size,
            compute=ray.data.TaskPoolStrategy(size=concurrency),
            num_cpus=0.25 if num_cpus is None else num_cpus,
        )
    with warnings.catch_warnings():
        # max_restarts has no named parameter in Ray 2.60's map_batches: passed as a remote argument
        # it draws a warning of their removal in Ray 2.64 on every run (the pinned Ray is 2.60)
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(
            GenerateBatch,
            fn_constructor_kwargs=kwargs,
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=1.0 if num_cpus is None else num_cpus,
            num_gpus=num_gpus,
            # Ray 2.60 keeps a UDF actor's constructor arguments in the object store, from where a restart
            # cannot be relied on (ray-project/ray#53727) and says so in an error-level line of every run
            # (#57733, fixed after 2.60). The engine is rebuilt from model_dir by a new pool, not restarted
            # here: a failed batch fails the dataset with its reason.
            max_restarts=0,
        )
