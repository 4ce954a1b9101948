"""The stage graph: every stage of a run, what it consumes, and where its settings and code live.

A new stage is three things:

1. a config section: a pydantic model in ``pipelines/<kind>/config.py`` that imports no implementation
   (reading a run config never imports torch, Ray or another stage's code; tests/test_imports.py);
2. a job module ``pipelines/<kind>/job.py`` with ``run(cfg, name) -> dict`` (the work; returns its
   headline numbers, which go to ``metrics/summary.json``) and, where it needs them,
   ``preflight(cfg, name)`` (checks before Ray starts; raise ``ConfigError``),
   ``report_section(run, name) -> str`` (its part of report.md; default: a table of its numbers),
   ``start_over(cfg, name)`` (what ``--force`` drops besides the outputs, e.g. checkpoints) and
   ``add_cli_args(parser)`` / ``cli_overrides(args)`` (flags that are shorthands for config keys);
3. one ``Stage`` entry in ``STAGES`` below, with what it consumes.

``name`` is the stage's name in the run: its config section (``cfg.<name>``), its done marker,
metrics, summary entry and ``checkpoints/<name>``. The same kind of stage may run more than once
under different names - the R1 recipe runs SFT, GRPO, rejection sampling, SFT and GRPO again - by
declaring instances in the run config, each with its own section::

    stages:
      grpo_final: {kind: grpo}      # another grpo: its settings in grpo_final:, its own checkpoints
    grpo_final:
      init: models/sft_rs           # what it consumes follows from its settings
      output_name: rl_final

``consumes(settings, cfg)`` is computed from the stage's own settings, so a choice in the config
moves an edge (GRPO in R1 mode consumes the SFT model, in R1-Zero mode the base model). Each entry
is a stage name or an artifact path under the run (``models/sft``), resolved to the stage that
``produces`` it; an entry ending in ``?`` is optional (an edge only when some stage of the run makes
it: what a server serves). Redoing a stage invalidates only the stages built on it, directly or
through others (``Graph.built_on``); a stage whose outputs are complete is skipped by
``raychat run`` and resumes from its own checkpoints when it was cut short.

``long_running`` stages (serving) block in ``run`` until stopped: they have no done marker, are
never skipped or invalidated, and ``raychat run`` starts them only when named.

The lifecycle as it grows (stages marked * are still to come, with their issues)::

    world -> clean -> tokenize -> pretrain (models/base)
      -> sft (models/sft; base + SFT data; the "I don't know" stage idk reads sft or base and writes SFT data)
      -> rm (models/rm; sft, or base in a run without one, + preference pairs)
      -> grpo (models/rl; sft in R1 mode, base in R1-Zero mode; rm optional)
      -> distill (models/student; the most trained chat model: rl when a grpo stage makes it, else sft)
      serve (long-running; every model the run makes)
"""

from __future__ import annotations

import dataclasses
import heapq
import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from pipelines.clean.config import CleanConfig
from pipelines.distill.config import DistillConfig
from pipelines.errors import ConfigError
from pipelines.grpo.config import GRPOConfig
from pipelines.idk.config import IDKStageConfig
from pipelines.pretrain.config import PretrainConfig
from pipelines.rm.config import RMConfig
from pipelines.sft.config import SFTConfig
from pipelines.tokenize.config import TokenizeConfig
from pipelines.world.config import WorldConfig
from serving.config import ServeConfig


def _nothing(*_: Any) -> Sequence[str]:
    return ()


@dataclass(frozen=True)
class Stage:
    """One stage of a run (see the module docstring)."""

    name: str
    config: type[BaseModel]
    help: str
    consumes: Callable[[Any, Any], Sequence[str]] = _nothing  # (settings, run config) -> names/artifacts
    produces: Callable[[Any], Sequence[str]] = _nothing  # settings -> artifact paths under the run
    kind: str = ""  # what it is another instance of; "" = itself
    long_running: bool = False
    job: str = ""  # its job module; "" = pipelines.<kind>.job

    def module(self) -> ModuleType:
        """The job module, imported now (it may import Ray and torch: only for a stage that runs)."""
        return importlib.import_module(self.job or f"pipelines.{self.kind or self.name}.job")

    def settings(self, cfg: Any) -> Any:
        return getattr(cfg, self.name)


def points_into(settings: BaseModel, run_dir: str, location: str) -> bool:
    """Whether a path among ``settings``' values is ``<run_dir>/<location>`` or under it (written
    with the ``{run_dir}`` placeholder or spelled out): a stage consumes what its settings point at."""
    prefixes = [f"{{run_dir}}/{location}", f"{run_dir.rstrip('/')}/{location}"]

    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list | tuple):
            for v in value:
                yield from strings(v)

    return any(
        s == p or s.startswith(p + "/") for s in strings(settings.model_dump(mode="json")) for p in prefixes
    )


def _clean_consumes(s: CleanConfig, cfg: Any) -> list[str]:
    return ["world"] if points_into(s, cfg.run_dir, "world") else []  # its crawl, its blocklists


def _tokenize_consumes(s: TokenizeConfig, cfg: Any) -> list[str]:
    return ["clean"] if s.input is None or points_into(s, cfg.run_dir, "data/clean") else []


def _model_consumed(init: str | None, cfg: Any, default: str) -> list[str]:
    """The stage behind a model setting: ``models/<name>`` under the run (``{run_dir}/...`` or spelled
    out), or ``default`` when it is null; a model from elsewhere (an imported checkpoint) is no edge."""
    if init is None:
        return [default]
    prefixes = ("{run_dir}/", f"{str(cfg.run_dir).rstrip('/')}/")
    for prefix in prefixes:
        if init.startswith(prefix):
            return [init[len(prefix) :]]
    return [init] if init.startswith("models/") else []


def _sft_consumes(s: Any, cfg: Any) -> list[str]:
    # its model, the tiny world's conversations when it trains on them and the run has a world stage,
    # and the run's tokens when it replays pretraining text (an imported init model orders it nowhere else)
    return [
        *_model_consumed(s.init, cfg, "pretrain"),
        *(["world?"] if s.world_kinds else []),
        *(["tokenize?"] if s.pretrain_replay else []),
    ]


def rm_default_init(cfg: Any) -> str:
    """The stage whose model ``rm.init: null`` means: the run's sft stage, else its pretrain stage."""
    return "sft" if getattr(cfg, "sft", None) is not None else "pretrain"


def _rm_consumes(s: RMConfig, cfg: Any) -> list[str]:
    # its model (rm.init, by default the SFT model), and the tiny world when it makes pairs from it
    world = [] if not s.world.enabled else ["world?"] if s.sources else ["world"]  # its only pairs, or more
    return [*_model_consumed(s.init, cfg, rm_default_init(cfg)), *world]


def _grpo_consumes(s: GRPOConfig, cfg: Any) -> list[str]:
    # its model (R1: the SFT model, R1-Zero: the base), the world's problems, the reward model if it has one
    out = _model_consumed(s.init, cfg, "models/sft" if s.mode == "r1" else "models/base")
    if s.data.source == "world":
        out.append("world")
    if s.rewards.rm is not None:
        out += [f"{m}?" for m in _model_consumed(s.rewards.rm.model, cfg, "models/rm")]
    return out


def _serve_consumes(s: ServeConfig, cfg: Any) -> list[str]:
    """Every model another stage of the run writes (those it lists when ``run_models`` is off), each
    optional: a server starts with the models that exist, so it is ordered after the stages that
    make them without needing any of them."""
    others = [*STAGES, *(instance(e.kind, n) for n, e in (getattr(cfg, "stages", None) or {}).items())]
    made = [
        artifact
        for stage in others
        if (stage.kind or stage.name) != "serve" and hasattr(cfg, stage.name)  # a config of another registry
        for artifact in stage.produces(stage.settings(cfg))
        if artifact.startswith("models/")
    ]
    return [f"{m}?" for m in made if s.run_models or points_into(s, cfg.run_dir, m)]


def _distill_consumes(s: Any, cfg: Any) -> list[str]:
    # the teacher (by default the grpo stage's model when a stage makes it, else the sft model:
    # resolved at run time), the sft stage's data (prompts, held-out sets, the control's mixture), a
    # student init
    default = [f"models/{cfg.grpo.output_name}?", "sft"]
    teacher = default if s.teacher is None else _model_consumed(s.teacher, cfg, "sft")
    start = _model_consumed(s.student_init, cfg, "sft") if s.student_init else []
    # the default prompts are the world's problems, which the sft stage writes out with its data
    world = ["world"] if any(points_into(p, cfg.run_dir, "sft_data") for p in s.prompts) else []
    return [*teacher, "sft", *start, *world]


STAGES: tuple[Stage, ...] = (
    Stage(
        "world",
        WorldConfig,
        "write the tiny world: a seeded mini web crawl (WARC) and its facts",
        produces=lambda s: ["world"],
    ),
    Stage(
        "clean",
        CleanConfig,
        "extract, filter, de-identify and deduplicate crawl data (Ray Data)",
        consumes=_clean_consumes,
        produces=lambda s: ["data/clean", "data/rejected", "data/errors", "data/stats.json"],
    ),
    Stage(
        "tokenize",
        TokenizeConfig,
        "train or load the tokenizer and write token shards (Ray tasks)",
        consumes=_tokenize_consumes,
        produces=lambda s: ["tokenizer", "tokens"],
    ),
    Stage(
        "pretrain",
        PretrainConfig,
        "pretrain the base model on the token shards (Ray Train)",
        consumes=lambda s, cfg: ["tokenize"],
        produces=lambda s: [f"models/{s.output_name}"],
    ),
    Stage(
        "sft",
        SFTConfig,
        "fine-tune a chat model on conversations, evaluate it, layout ablation (Ray Train)",
        consumes=_sft_consumes,
        produces=lambda s: [f"models/{s.output_name}"],
    ),
    Stage(
        "idk",
        IDKStageConfig,
        "probe the SFT model, train it to say 'I don't know', measure before/after",
        consumes=lambda s, cfg: ["sft", "world"],  # its probe questions are the world's (via sft_data)
        produces=lambda s: [f"models/{s.output_name}"],
    ),
    Stage(
        "rm",
        RMConfig,
        "train the reward model on preference pairs, Bradley-Terry (Ray Train)",
        consumes=_rm_consumes,
        produces=lambda s: [f"models/{s.output_name}"],
    ),
    Stage(
        "grpo",
        GRPOConfig,
        "GRPO on Ray actor pools: generators, reward workers, learner ranks, reference",
        consumes=_grpo_consumes,
        produces=lambda s: [
            f"models/{s.output_name}",
            *([f"models/{s.control_name}"] if s.control.enabled else []),
        ],
    ),
    Stage(
        "distill",
        DistillConfig,
        "rejection-sample the teacher's reasoning, distill it into a smaller student, compare with SFT alone",
        consumes=_distill_consumes,
        produces=lambda s: [
            f"models/{s.output_name}",
            f"models/{s.control_output_name}",
            *([f"models/{s.logit.output_name}"] if s.logit.enabled else []),
            "distill_data",
        ],
    ),
    Stage(
        "serve",
        ServeConfig,
        "serve the run's models: an OpenAI-compatible API and a web chat (Ray Serve; runs until stopped)",
        consumes=_serve_consumes,
        long_running=True,
        job="serving.job",
    ),
)


def registered(name: str, registry: Sequence[Stage] = STAGES) -> Stage:
    for stage in registry:
        if stage.name == name:
            return stage
    raise ConfigError(f"unknown stage {name!r}; stages are: {', '.join(s.name for s in registry)}")


def instance(kind: str, name: str, registry: Sequence[Stage] = STAGES) -> Stage:
    """Another stage of kind ``kind`` (a registered stage's name), called ``name``."""
    base = registered(kind, registry)
    return dataclasses.replace(base, name=name, kind=base.kind or base.name)


class Graph:
    """The stages of one run config: the registered ones and the run's own instances (``stages:``),
    with their consumes resolved to stage names and a fixed order (inputs first, then registry order)."""

    def __init__(self, cfg: Any, registry: Sequence[Stage] = STAGES) -> None:
        self.cfg = cfg
        stages = list(registry)
        for name, entry in (getattr(cfg, "stages", None) or {}).items():
            stages.append(instance(entry.kind, name, registry))
        self.stages = {s.name: s for s in stages}
        self._required: dict[str, list[str]] = {}  # the inputs a stage cannot run without (no "?")
        self._inputs = {s.name: self._resolve(s) for s in stages}
        # ties broken by the registry's order, an instance right after the stage it is another of
        position = {s.name: float(i) for i, s in enumerate(registry)}
        for i, s in enumerate(stages[len(registry) :]):
            position[s.name] = position[s.kind] + (i + 1) / (len(stages) + 1)
        self.names = self._topological(sorted(self.stages, key=position.__getitem__))

    def __getitem__(self, name: str) -> Stage:
        if name not in self.stages:
            raise ConfigError(f"unknown stage {name!r}; stages of this run: {', '.join(self.names)}")
        return self.stages[name]

    def __contains__(self, name: object) -> bool:
        return name in self.stages

    def __iter__(self) -> Iterator[Stage]:
        return (self.stages[n] for n in self.names)

    def consumes(self, name: str) -> list[str]:
        """The stages ``name`` is built on directly."""
        return list(self._inputs[self[name].name])

    def producer(self, artifact: str) -> str | None:
        """The stage that writes ``artifact`` (a path under the run, or a file inside one)."""
        artifact = artifact.strip("/")
        for stage in self.stages.values():
            for made in stage.produces(stage.settings(self.cfg)):
                if artifact == made or artifact.startswith(made.rstrip("/") + "/"):
                    return stage.name
        return None

    def order(self, names: Sequence[str]) -> list[str]:
        """``names`` in the order they run (each after what it consumes)."""
        wanted = {self[n].name for n in names}
        return [n for n in self.names if n in wanted]

    def needing(self, name: str) -> list[str]:
        """Every stage that cannot run without ``name``, directly or through others (optional inputs,
        such as the tiny world's conversations for SFT, do not count)."""
        found = self._downstream(name, self._required)
        return [n for n in self.names if n in found]

    def built_on(self, name: str) -> list[str]:
        """Every stage that consumes ``name``, directly or through others: what redoing it invalidates.
        Long-running stages are not among them (they hold no done marker)."""
        found = self._downstream(name, self._inputs)
        return [n for n in self.names if n in found and not self.stages[n].long_running]

    def _downstream(self, name: str, edges: dict[str, list[str]]) -> set[str]:
        """The stages reached from ``name`` along ``edges`` (stage -> the stages it takes from)."""
        found: set[str] = set()
        frontier = [self[name].name]
        while frontier:
            current = frontier.pop()
            for other, inputs in edges.items():
                if current in inputs and other not in found:
                    found.add(other)
                    frontier.append(other)
        return found

    def _resolve(self, stage: Stage) -> list[str]:
        out: list[str] = []
        for entry in stage.consumes(stage.settings(self.cfg), self.cfg):
            optional = entry.endswith("?")
            entry = entry.rstrip("?")
            found = entry if entry in self.stages else self.producer(entry)
            if found is None and not optional:
                raise ConfigError(
                    f"stage {stage.name} consumes {entry!r}, which no stage of this run is or writes "
                    f"(stages: {', '.join(self.stages)})"
                )
            if found is not None and found != stage.name and found not in out:
                out.append(found)
            if found is not None and found != stage.name and not optional:
                self._required.setdefault(stage.name, []).append(found)
        return out

    def _topological(self, registry_order: list[str]) -> list[str]:
        rank = {n: i for i, n in enumerate(registry_order)}
        waiting = {n: set(self._inputs[n]) for n in registry_order}
        ready = [(rank[n], n) for n, inputs in waiting.items() if not inputs]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, name = heapq.heappop(ready)
            order.append(name)
            for other, inputs in waiting.items():
                if name in inputs:
                    inputs.discard(name)
                    if not inputs:
                        heapq.heappush(ready, (rank[other], other))
        if len(order) < len(registry_order):
            stuck = [n for n in registry_order if n not in order]
            raise ConfigError(
                f"the stages {', '.join(stuck)} consume each other in a cycle; check their inputs"
            )
        return order
