"""The stage graph and the runner, on the lifecycle to come: consumes computed from settings, named
instances of one kind, invalidation of only what was built on a redone stage, a long-running stage.

The later stages are stand-ins here (their job modules are made in the test), wired as the real ones
will be: sft on base, rm on base or sft, grpo on sft (R1) or base (R1-Zero) with an optional reward
model, distill on rl, serve on every chat model that exists, and an R1-style second grpo.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from lm.config_base import StrictModel
from pipelines import cli, runner
from pipelines.config import load_config
from pipelines.errors import ConfigError
from pipelines.run_dir import RunDir, is_done, read_summary
from pipelines.runner import run_stage, run_stages
from pipelines.stages import STAGES, Graph, Stage, registered


class ModelStage(StrictModel):
    init: str = "models/base"
    output_name: str = "sft"


class GRPOSettings(StrictModel):
    mode: Literal["r1", "r1_zero"] = "r1"
    reward_model: str | None = None
    output_name: str = "rl"


class ServeSettings(StrictModel):
    port: int = Field(8000)


def _model(s: ModelStage) -> list[str]:
    return [f"models/{s.output_name}"]


FAKE = (
    Stage("pretrain", ModelStage, "base", produces=lambda s: ["models/base"], job="fakejobs"),
    Stage("sft", ModelStage, "sft", consumes=lambda s, cfg: [s.init], produces=_model, job="fakejobs"),
    Stage("rm", ModelStage, "rm", consumes=lambda s, cfg: [s.init], produces=_model, job="fakejobs"),
    Stage(
        "grpo",
        GRPOSettings,
        "grpo",
        consumes=lambda s, cfg: [
            "models/sft" if s.mode == "r1" else "models/base",
            *([s.reward_model] if s.reward_model else []),
        ],
        produces=lambda s: [f"models/{s.output_name}"],
        job="fakejobs",
    ),
    Stage(
        "distill", ModelStage, "distill", consumes=lambda s, cfg: ["grpo"], produces=_model, job="fakejobs"
    ),
    Stage(
        "serve",
        ServeSettings,
        "serve",
        consumes=lambda s, cfg: ["models/sft?", "models/rl?", "models/student?", "models/nothing?"],
        long_running=True,
        job="fakejobs",
    ),
)


def config(**sections) -> types.SimpleNamespace:
    defaults = {
        "run_dir": "unused",
        "stages": {},
        "pretrain": ModelStage(output_name="base"),
        "sft": ModelStage(),
        "rm": ModelStage(output_name="rm"),
        "grpo": GRPOSettings(),
        "distill": ModelStage(output_name="student"),
        "serve": ServeSettings(),
        "ray": None,
    }
    return types.SimpleNamespace(**(defaults | sections))


def test_consumes_follow_the_settings() -> None:
    g = Graph(config(), FAKE)
    assert g.consumes("sft") == ["pretrain"] and g.consumes("grpo") == ["sft"]
    assert g.consumes("serve") == ["sft", "grpo", "distill"]  # models/nothing: optional, absent
    assert g.names == ["pretrain", "sft", "rm", "grpo", "distill", "serve"]
    zero = Graph(
        config(grpo=GRPOSettings(mode="r1_zero", reward_model="rm"), rm=ModelStage(output_name="rm")), FAKE
    )
    assert zero.consumes("grpo") == ["pretrain", "rm"]
    assert zero.built_on("sft") == []  # in R1-Zero mode, nothing is built on the SFT model...
    assert zero.built_on("rm") == ["grpo", "distill"]  # ...but on the reward model
    # redoing SFT in R1 mode: GRPO and distillation are stale, the reward model (on base) is not,
    # and the server holds no done marker to lose
    assert Graph(config(), FAKE).built_on("sft") == ["grpo", "distill"]
    with pytest.raises(ConfigError, match="consumes 'models/none'"):
        Graph(config(sft=ModelStage(init="models/none")), FAKE)
    with pytest.raises(ConfigError, match="cycle"):
        Graph(config(pretrain=ModelStage(init="x"), sft=ModelStage(init="distill")), FAKE)


def test_named_instances_of_a_kind() -> None:
    """R1: sft, grpo, rejection-sampled data, sft again and a short final grpo (two grpo instances)."""
    stages = {"grpo_final": types.SimpleNamespace(kind="grpo")}
    final = GRPOSettings(output_name="rl_final")
    g = Graph(config(stages=stages, grpo_final=final), FAKE)
    assert g["grpo_final"].kind == "grpo" and g.consumes("grpo_final") == ["sft"]
    assert g.producer("models/rl_final/model.safetensors") == "grpo_final"
    assert g.built_on("sft") == ["grpo", "grpo_final", "distill"]
    assert g.names.index("grpo_final") == g.names.index("grpo") + 1


@pytest.fixture
def fake_jobs(monkeypatch):
    """Job modules that record their calls and leave a file per stage, like real stages."""
    calls: list[str] = []
    module = types.ModuleType("fakejobs")

    def run(cfg, name):
        calls.append(name)
        Path(cfg.run_dir, "out").mkdir(parents=True, exist_ok=True)
        Path(cfg.run_dir, "out", name).write_text("made")
        return {"made": name, "value": len(calls)}

    def report_section(run_dir: RunDir, name: str) -> str:
        return f"section of {name}" if name == "sft" else ""

    module.run, module.report_section = run, report_section
    monkeypatch.setitem(sys.modules, "fakejobs", module)
    monkeypatch.setattr(runner, "init_ray", lambda _ray: None)  # the stand-ins need no Ray
    return calls


def test_the_runner_skips_complete_stages_and_redoes_only_what_was_built_on_a_stage(
    tmp_path, fake_jobs
) -> None:
    g = Graph(config(run_dir=str(tmp_path)), FAKE)
    run = RunDir(tmp_path)
    everything = [s.name for s in g if not s.long_running]
    run_stages(g, list(reversed(everything)))  # any order given: graph order run
    assert fake_jobs == ["pretrain", "sft", "rm", "grpo", "distill"]
    assert all(is_done(run, n) for n in everything)
    marker = json.loads(Path(run.done_marker("grpo")).read_text())
    assert marker["consumes"] == ["sft"]
    run_stages(g, everything)  # all complete: nothing runs
    assert len(fake_jobs) == 5
    run_stage(g, "sft")  # redone alone: grpo and distill are stale, rm (on base) is not
    assert not is_done(run, "grpo") and not is_done(run, "distill") and is_done(run, "rm")
    run_stages(g, everything)
    assert fake_jobs[5:] == ["sft", "grpo", "distill"]
    # the long-running stage runs when named, last, leaves no marker and is never skipped
    run_stages(g, ["serve", "pretrain"])
    run_stages(g, ["serve"])
    assert fake_jobs[8:] == ["serve", "serve"] and not is_done(run, "serve")
    summary = read_summary(run)
    assert set(summary) == {*everything, "serve"} and summary["sft"]["made"] == "sft"
    report = (tmp_path / "report.md").read_text()
    assert "## sft\n\nsection of sft" in report  # the stage's own section
    assert "## rm\n\n| metric | value |" in report  # the default: its numbers
    assert report.index("## pretrain") < report.index("## sft") < report.index("## distill")


def test_a_stage_run_alone_refreshes_the_report(tmp_path, monkeypatch) -> None:
    """``raychat world`` alone (the world needs no Ray): report.md has the world's own section."""
    monkeypatch.setattr(cli, "init_ray", lambda _ray: None)
    args = [
        "world",
        "--run-dir",
        str(tmp_path),
        "--set",
        "world.num_pages=50",
        "--set",
        "world.num_entities=40",
    ]
    args += ["--set", "world.arithmetic_train=5", "--set", "world.arithmetic_test=5"]
    assert cli.main(args) == 0
    report = (tmp_path / "report.md").read_text()
    assert "## world" in report and "| article |" in report
    assert is_done(RunDir(tmp_path), "world")


def test_a_run_config_declares_named_instances(tmp_path) -> None:
    path = tmp_path / "r1.yaml"
    path.write_text(
        "stages:\n  pretrain_long: {kind: pretrain}\n"
        "pretrain_long:\n  max_steps: 5\n  output_name: base_long\n"
    )
    cfg = load_config(path)
    assert cfg.pretrain_long.max_steps == 5 and cfg.pretrain.max_steps == 150
    g = Graph(cfg)
    assert g.names.index("pretrain_long") == g.names.index("pretrain") + 1
    assert g.consumes("pretrain_long") == ["tokenize"]
    assert g.names[-1] == "serve" and g.consumes("serve") == [
        "pretrain",
        "sft",
        "idk",
        "rm",
        "grpo",
        "distill",
        "pretrain_long",
    ]
    assert g.producer("models/base_long") == "pretrain_long"
    assert g.built_on("clean") == [
        "tokenize",
        "pretrain",
        "pretrain_long",
        "sft",
        "idk",
        "rm",
        "grpo",
        "distill",
    ]
    assert g["pretrain_long"].module().__name__ == "pipelines.pretrain.job"
    for text, error in (
        ("stages:\n  x: {kind: nope}\n", "stages.x.kind: unknown stage 'nope'"),
        ("stages:\n  Bad-Name: {kind: pretrain}\n", "lower_case_with_underscores"),
        ("stages:\n  clean: {kind: pretrain}\n", "not one of"),
        ("stages:\n  p2: {kind: pretrain}\np2:\n  max_stepz: 1\n", "p2.max_stepz: unknown key"),
        ("stages:\n  p2: {}\n", "give the stage's kind"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=error):
            load_config(path)


def test_the_lifecycles_edges_follow_where_inputs_point(tmp_path) -> None:
    """clean consumes world only when it reads the run's own crawl; tokenize clean unless given another input."""
    g = Graph(load_config(None, [f"run_dir={tmp_path}"]))
    assert [g.consumes(n) for n in g.names] == [
        [],
        ["world"],
        ["clean"],
        ["tokenize"],
        ["pretrain", "world"],
        ["sft", "world"],  # idk: the world's facts to probe (the sft stage writes them out)
        ["sft", "world"],
        ["sft", "world"],
        ["grpo", "sft", "world"],  # distill: the most trained chat model (rl, else sft), the world's problems
        ["pretrain", "sft", "idk", "rm", "grpo", "distill"],  # serve: every model the run makes
    ]
    assert g.built_on("world") == ["clean", "tokenize", "pretrain", "sft", "idk", "rm", "grpo", "distill"]

    # sft consumes the model its init names, the base model when it names none
    def sft_consumes(*sets: str) -> list[str]:
        return Graph(load_config(None, [f"run_dir={tmp_path}", *sets])).consumes("sft")

    assert sft_consumes("sft.init={run_dir}/models/base", "sft.world_kinds=[]") == ["pretrain"]
    assert sft_consumes("sft.init=/models/imported-llama", "sft.world_kinds=[]") == []
    with pytest.raises(ConfigError, match="cycle"):  # idk consumes sft
        sft_consumes("sft.init={run_dir}/models/sft_idk")
    real = Graph(
        load_config(None, [f"run_dir={tmp_path}", "clean.inputs=[/data/crawl]", "tokenize.input=/x"])
    )
    assert real.consumes("clean") == [] and real.consumes("tokenize") == []
    assert real.built_on("world") == [
        "sft",
        "idk",
        "rm",
        "grpo",
        "distill",
    ]  # the world's conversations and problems, still
    spelled_out = Graph(load_config(None, [f"run_dir={tmp_path}", f"clean.inputs=[{tmp_path}/world/crawl]"]))
    assert spelled_out.consumes("clean") == ["world"]
    assert [s.name for s in STAGES] == [
        "world",
        "clean",
        "tokenize",
        "pretrain",
        "sft",
        "idk",
        "rm",
        "grpo",
        "distill",
        "serve",
    ]
    assert registered("pretrain").module().__name__ == "pipelines.pretrain.job"


def test_grpo_consumes_the_sft_model_or_the_base_and_a_reward_model_when_one_is_made(tmp_path) -> None:
    """R1 mode: models/sft; R1-Zero: models/base; rewards.rm: models/rm when a stage of the run makes it;
    a second grpo (R1's final one) consumes the model its init names."""

    def graph(*sets: str) -> Graph:
        return Graph(load_config(None, [f"run_dir={tmp_path}", *sets]))

    assert graph().consumes("grpo") == ["sft", "world"]
    assert graph("grpo.mode=r1_zero").consumes("grpo") == ["pretrain", "world"]
    jsonl = ["grpo.data.source=jsonl", "grpo.data.train_path=/data/gsm8k.jsonl", "grpo.init=/models/x"]
    assert graph(*jsonl).consumes("grpo") == []
    with_rm = graph("grpo.rewards.rm={weight: 0.5}")  # the rm stage writes models/rm
    assert with_rm.consumes("grpo") == ["sft", "world", "rm"]
    assert with_rm.names.index("grpo") > with_rm.names.index("rm")
    assert with_rm.built_on("rm") == ["grpo", "distill"]  # a redone reward model invalidates GRPO
    for spelled in ("'{run_dir}/models/rm'", "models/rm", f"{tmp_path}/models/rm"):
        assert graph(f"grpo.rewards.rm={{weight: 0.5, model: {spelled}}}").consumes("grpo") == [
            "sft",
            "world",
            "rm",
        ]
    elsewhere = graph("grpo.rewards.rm={weight: 0.5, model: /models/imported-rm}")
    assert elsewhere.consumes("grpo") == ["sft", "world"]  # a reward model from outside the run: no edge
    r1 = graph(
        "stages={grpo_final: {kind: grpo}}",
        "grpo_final.init={run_dir}/models/rl",
        "grpo_final.output_name=rl_final",
    )
    assert r1.consumes("grpo_final") == ["grpo", "world"] and r1.producer("models/rl_final") == "grpo_final"
    assert r1.built_on("sft") == ["idk", "rm", "grpo", "grpo_final", "distill"]


def test_the_reward_model_consumes_what_its_init_names(tmp_path) -> None:
    """rm.init null: the sft stage's model in a run with one, else the base model; the world's pairs
    only when it makes them; an instance is wired from its own settings."""

    def rm_consumes(*sets: str, registry=STAGES, name: str = "rm") -> list[str]:
        return Graph(load_config(None, [f"run_dir={tmp_path}", *sets]), registry).consumes(name)

    assert rm_consumes() == ["sft", "world"]
    assert rm_consumes("rm.world.enabled=false") == ["sft"]
    assert rm_consumes("rm.init={run_dir}/models/base") == ["pretrain", "world"]
    assert rm_consumes("rm.init=models/sft_idk", "rm.world.enabled=false") == ["idk"]
    assert rm_consumes("rm.init=/models/imported-llama", "rm.world.enabled=false") == []
    without_sft = tuple(
        s for s in STAGES if s.name not in ("sft", "idk", "grpo", "distill")
    )  # these need sft

    class NoSFT:  # a run config of that registry: no sft section
        def __init__(self, cfg):
            self._cfg = cfg

        def __getattr__(self, key):
            if key in ("sft", "idk"):
                raise AttributeError(key)
            return getattr(self._cfg, key)

    cfg = NoSFT(load_config(None, [f"run_dir={tmp_path}"]))
    assert Graph(cfg, without_sft).consumes("rm") == ["pretrain", "world"]
    from pipelines.rm.job import init_dir

    assert init_dir(cfg) == tmp_path.resolve() / "models" / "base"
    assert init_dir(load_config(None, [f"run_dir={tmp_path}"])) == tmp_path.resolve() / "models" / "sft"
    # a second reward model, on the idk model, with its own settings
    declared = [
        "stages={rm_idk: {kind: rm}}",
        "rm_idk.init={run_dir}/models/sft_idk",
        "rm_idk.output_name=rm_idk",
    ]
    g = Graph(load_config(None, [f"run_dir={tmp_path}", *declared]))
    assert g.consumes("rm_idk") == ["idk", "world"] and g.producer("models/rm_idk") == "rm_idk"
    assert g.built_on("sft") == ["idk", "rm", "rm_idk", "grpo", "distill"]


def test_help_for_a_name_that_is_no_command_says_so(capsys) -> None:
    from pipelines.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser(["finetune", "--help"]).parse_args(["finetune", "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "'finetune' is not a raychat command" in out and "stages: {finetune: {kind: K}}" in out, out
    assert "K one of world, clean, tokenize, pretrain" in out


def test_a_stage_without_config_on_a_run_stages_wrote_warns(tmp_path, caplog) -> None:
    """The built-in settings are not configs/tiny.yaml's: `raychat sft` on make demo's runs/tiny without
    --config retrained on other arithmetic data and set the demo's SFT checkpoints aside, unannounced."""
    import logging

    from pipelines.cli import main
    from pipelines.run_dir import RunDir, mark_done

    fresh, made = tmp_path / "fresh", tmp_path / "made"
    with caplog.at_level(logging.WARNING, logger="raychat"):
        assert main(["sft", "--run-dir", str(fresh)]) == 2  # no base model: fails in preflight
    assert "no --config" not in caplog.text  # nothing written there yet: nothing to warn about
    mark_done(RunDir(made), "sft")
    with caplog.at_level(logging.WARNING, logger="raychat"):
        main(["sft", "--run-dir", str(made)])  # the stage's own earlier run is no surprise
    assert "no --config" not in caplog.text
    mark_done(RunDir(made), "world")
    mark_done(RunDir(made), "pretrain")
    for argv in (["sft", "--run-dir", str(made)], ["run", "--stages", "sft", "--run-dir", str(made)]):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="raychat"):
            main(argv)
        assert f"no --config: using the built-in settings on {made}" in caplog.text, argv
        assert "stages (world, pretrain" in caplog.text and "configs/tiny.yaml" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="raychat"):
        assert main(["serve", "--run-dir", str(made)]) == 2  # no model to serve
    assert "no --config" not in caplog.text  # serving the demo's run without a config is as documented
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="raychat"):
        main(["report", "--run-dir", str(made)])  # report.md from the built-in stage list: it may miss some
    assert "report.md may leave out stages the config declares" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="raychat"):
        tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
        assert main(["sft", "--config", str(tiny), "--run-dir", str(made)]) == 2
    assert "no --config" not in caplog.text


def test_config_help_says_what_the_default_is(capsys) -> None:
    from pipelines.cli import build_parser

    for command, default in (("demo", "(default: configs/tiny.yaml)"), ("sft", "(default: the built-in")):
        with pytest.raises(SystemExit):
            build_parser([command, "--help"]).parse_args([command, "--help"])
        assert default in " ".join(capsys.readouterr().out.split()), command


@pytest.mark.parametrize(
    "stage, says",
    [("sft", "no model at"), ("tokenize", "no clean parquet folder"), ("pretrain", "index.json not found")],
)
def test_a_mistyped_run_dir_is_refused_and_left_uncreated(tmp_path, capsys, monkeypatch, stage, says) -> None:
    """`raychat sft --run-dir runs/tyni` said that models/base is missing and left runs/tyni/logs and
    metrics behind (tokenize and pretrain said it after Ray started); a run directory that existed
    keeps what it had."""

    def refuse(_cfg):
        raise AssertionError("Ray was started before the problem was reported")

    monkeypatch.setattr(cli, "init_ray", refuse)
    typo = tmp_path / "runs" / "tyni"
    assert cli.main([stage, "--run-dir", str(typo)]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert cli.main(["run", "--stages", stage, "--run-dir", str(typo)]) == 2  # the same through `run`
    assert not (tmp_path / "runs").exists()
    kept = tmp_path / "mine"
    (kept / "notes").mkdir(parents=True)
    assert cli.main([stage, "--run-dir", str(kept)]) == 2
    assert (kept / "notes").is_dir() and (kept / "logs" / "raychat.log").is_file()


def test_a_refused_run_takes_away_only_what_it_made(tmp_path, monkeypatch) -> None:
    """Two runs of a sweep under a new parent: the refused one must not take the other one's files
    (it once removed the whole new parent folder)."""
    from pipelines.errors import ConfigError
    from pipelines.runner import forgotten_if_refused, log_to_run

    sweep = tmp_path / "sweep"
    with pytest.raises(ConfigError), forgotten_if_refused(RunDir(sweep / "lr2")):
        log_to_run(RunDir(sweep / "lr2"))
        (sweep / "lr1" / "data").mkdir(parents=True)  # the other run, started meanwhile
        (sweep / "lr1" / "data" / "part-0.parquet").write_bytes(b"PAR1")
        raise ConfigError("refused")
    assert (sweep / "lr1" / "data" / "part-0.parquet").read_bytes() == b"PAR1"
    assert sorted(p.name for p in sweep.iterdir()) == ["lr1"]


def test_a_run_on_ones_own_data_leaves_the_tiny_world_out(tmp_path, caplog) -> None:
    """`raychat run` on a config cleaning the user's own files built the tiny world and mixed its
    made-up facts into the chat model (SFT's conversations), then ran idk, rm, grpo and distill on it."""
    from pipelines.cli import _without_an_unasked_world

    every = lambda g: [s.name for s in g if not s.long_running]  # noqa: E731
    own = Graph(load_config(None, [f"run_dir={tmp_path}", f"clean.inputs=[{tmp_path}/mine.jsonl]"]))
    caplog.set_level("INFO", logger="raychat")
    assert _without_an_unasked_world(own, every(own)) == ["clean", "tokenize", "pretrain", "sft"]
    assert "leaving out world, idk, rm, grpo, distill" in caplog.text
    with_pairs = Graph(
        load_config(
            None,
            [
                f"run_dir={tmp_path}",
                f"clean.inputs=[{tmp_path}/mine.jsonl]",
                f"rm.sources=[{{path: {tmp_path}}}]",
            ],
        )
    )
    assert "rm" in _without_an_unasked_world(
        with_pairs, every(with_pairs)
    )  # its own pairs: the world is optional
    demo = Graph(
        load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml", [f"run_dir={tmp_path}"])
    )
    assert _without_an_unasked_world(demo, every(demo)) == every(demo)


def test_a_tokenizer_that_cannot_load_is_refused_before_ray_starts(tmp_path, capsys, monkeypatch) -> None:
    """`tokenize --tokenizer gpt2:/nonexistent` said so only after Ray had started."""

    def refuse(_cfg):
        raise AssertionError("Ray was started before the problem was reported")

    monkeypatch.setattr(cli, "init_ray", refuse)
    (tmp_path / "data" / "clean").mkdir(parents=True)
    assert cli.main(["tokenize", "--run-dir", str(tmp_path), "--tokenizer", f"gpt2:{tmp_path}/none"]) == 2
    assert f"tokenize.tokenizer: gpt2:{tmp_path}/none: vocab.bpe not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("stage", "blocked", "how"),
    [
        ("pretrain", "checkpoints", "read_only"),
        ("sft", "models", "read_only"),
        ("pretrain", "models", "file"),
    ],
)
def test_an_output_folder_that_cannot_be_written_is_refused_before_ray(
    tmp_path, capsys, monkeypatch, stage, blocked, how
) -> None:
    """A read-only `checkpoints/` was a traceback from inside Ray Train after the workers started;
    the run directory itself was checked, not the folders a stage writes into."""
    from test_clean_hostile import read_only

    def refuse(_cfg):
        raise AssertionError("Ray was started before the problem was reported")

    monkeypatch.setattr(cli, "init_ray", refuse)
    path = tmp_path / blocked
    if how == "file":
        path.write_text("not a folder")
        code = cli.main([stage, "--run-dir", str(tmp_path)])
    else:
        path.mkdir()
        with read_only(path):
            code = cli.main([stage, "--run-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"stage {stage}: cannot write the run directory" in err and str(path) in err
