"""The sft and idk stages through their real entry points on a small tiny world (Ray Train, Ray Data
batch generation on the engine actor with the search and calculator tools): what they write, the
numbers the report needs, resume after a killed worker, and a rerun that does not retrain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.run_dir import RunDir, is_done

# the first test builds the run (world to idk): about 4 minutes on a quiet 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
REPO = Path(__file__).resolve().parents[1]

SETTINGS = [
    "world.num_pages=300",
    "world.num_entities=60",
    "world.arithmetic_train=300",
    "world.arithmetic_test=20",
    "tokenize.vocab_size=768",
    "pretrain.max_steps=20",
    "pretrain.eval_every=20",
    "sft_data.idk.fresh_names=100",
    "sft_data.idk.search_miss=10",
    "sft_data.identity.conversations=40",
    "sft_data.search.passages=20",
    "sft_data.search.fresh_traces=40",
    "sft_data.qa.no_search=20",
    "sft_data.probes.counting=[20,6]",
    "sft_data.probes.decimal=[20,6]",
    "sft_data.arithmetic.ablation_problems=40",
    "sft_data.splits.arithmetic_cold_start=20",
    "sft.max_steps=12",
    "sft.checkpoint_every=6",
    "sft.eval_every=6",
    "sft.val_conversations=20",
    "sft.fail_at_step=8",  # the worker kills itself once; Ray Train restarts it from step 6
    "sft.eval.max_per_set=6",
    "sft.eval.max_new_tokens={known_eval: 16, unknown_eval: 16, identity_eval: 16, search_eval: 160, "
    "arithmetic_test: 48, probes_test: 48}",
    "sft.ablation.layouts=[answer_first,reasoning]",
    "sft.ablation.epochs=0.2",
    "idk.samples=2",
    "idk.max_probe_questions=8",
    "idk.validation_fresh=6",
]
REQUIRED = {
    "sft": ["identity_accuracy", "answer_first_accuracy", "reasoning_first_accuracy"],
    "idk": [
        "unknown_idk_rate_before",
        "unknown_idk_rate_after",
        "known_false_idk_rate_after",
        "known_accuracy_before",
        "known_accuracy_after",
    ],
    "search": ["accuracy_with_tool", "accuracy_without_tool"],
}


def _run(root: Path, stages: str, *extra: str) -> int:
    argv = [
        "run",
        "--config",
        str(REPO / "configs" / "tiny.yaml"),
        "--run-dir",
        str(root),
        "--stages",
        stages,
    ]
    for s in [*SETTINGS, *extra]:
        argv += ["--set", s]
    return main(argv)


@pytest.fixture(scope="module")
def post_trained(ray_session, tmp_path_factory) -> RunDir:
    root = tmp_path_factory.mktemp("sft") / "run"
    assert _run(root, "world,clean,tokenize,pretrain,sft,idk") == 0
    return RunDir(root)


def test_the_stages_write_chat_models_numbers_and_the_report(post_trained: RunDir) -> None:
    run = post_trained
    assert is_done(run, "sft") and is_done(run, "idk")
    summary = json.loads(Path(run.summary).read_text())
    for section, keys in REQUIRED.items():
        for key in keys:
            value = summary[section][key]
            assert isinstance(value, float) and 0.0 <= value <= 1.0, (section, key, value)
    for name in ("sft", "sft_idk", "sft_ablation_answer_first", "sft_ablation_reasoning"):
        model = run.model(name)
        generation = json.loads((model / "generation_config.json").read_text())
        assert len(generation["eos_token_id"]) == 2, name  # <|endoftext|> and <|im_end|>
        assert "chat_template" in json.loads((model / "tokenizer_config.json").read_text())
    # each model records the files its conversations came from, for raychat eval's contamination warning
    from pipelines.evaluation.contamination import contamination_warning, sha256_of

    trained_on = json.loads((run.model("sft") / "raychat.json").read_text())["trained_on"]
    assert trained_on and all(f["sha256"] == sha256_of(Path(f["path"])) for f in trained_on)
    assert all(Path(f["path"]).is_relative_to(run.root) for f in trained_on)  # the world's sft data
    warning = contamination_warning(run.model("sft"), trained_on[0]["path"])
    assert warning is not None and f"training data of {run.model('sft')} (stage sft)" in warning
    sft = summary["sft"]
    assert sft["steps"] == 12 and sft["val_loss"] < sft["val_loss_start"]
    assert sft["n"]["search_with_tool"] == 6 and sft["n"]["probes_calculator"] == 6
    idk = summary["idk"]
    assert idk["probe"]["questions"] == 8 and idk["probe"]["samples"] == 16
    assert idk["n"]["validation_unknown"] == 6 and idk["n"]["validation_known"] > 0
    assert 0.0 <= idk["validation_unknown_idk_rate_after"] <= 1.0
    probed = (run.root / "idk_data" / "probed.jsonl").read_text().splitlines()
    assert len(probed) == idk["probe"]["conversations"] > 0
    report = run.report.read_text()
    # (transcripts show whatever these barely trained models say; tests/test_sft.py checks their layout)
    for text in ("Post-training scorecard", "idk.unknown_idk_rate_after", "sft.answer_first_accuracy",
                 "How tokens think", "    user: ", "    assistant: ", "plots/sft_loss.png"):  # fmt: skip
        assert text in report, text


def test_a_killed_sft_worker_resumed_from_its_checkpoint(post_trained: RunDir) -> None:
    run = post_trained
    assert (run.checkpoints / "sft.fault_injected_at_step_8").is_file()
    records = [json.loads(x) for x in (run.metrics / "sft.jsonl").read_text().splitlines()]
    starts = [r for r in records if r.get("event") == "start"]
    assert [s["step"] for s in starts] == [0, 6]  # a fresh start, then the restart at the checkpoint
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [*range(1, 9), *range(7, 13)]  # steps 7-8 redone after the restart, nothing lost


def test_a_rerun_with_force_off_keeps_the_models(post_trained: RunDir) -> None:
    run = post_trained
    before = (run.model("sft_idk") / "raychat.json").read_text()
    assert _run(run.root, "sft,idk") == 0  # complete: skipped
    assert (run.model("sft_idk") / "raychat.json").read_text() == before


def test_raychat_eval_gives_the_stages_own_numbers(post_trained: RunDir, capsys) -> None:
    """``raychat eval --model`` asks and judges as the sft stage did (the same rows, prompts, tools and
    greedy replies through an engine actor), so it reproduces the stage's numbers; with -n it samples."""
    run = post_trained
    stored = json.loads((run.metrics / "eval_sft.json").read_text())["results"]
    base = [
        "eval",
        "--model",
        str(run.model("sft")),
        "--config",
        str(REPO / "configs" / "tiny.yaml"),
        "--json",
    ]
    for s in SETTINGS:
        base += ["--set", s]
    # the stage generates each tools setting's conditions together, to the longest of their limits
    for task, condition, tokens in (("tinyworld-arith", "arithmetic_with_calculator", 160),
                                    ("tinyworld-unknown", "unknown", 48)):  # fmt: skip
        assert main([*base, "--task", task, "--limit", "6", "--max-tokens", str(tokens)]) == 0
        numbers = json.loads(capsys.readouterr().out)
        assert numbers["problems"] == stored[condition]["n"] == 6, task
        assert numbers["accuracy"] == pytest.approx(stored[condition]["primary"]), task
    assert main([*base, "--task", "tinyworld-facts"]) == 0  # the defaults: the run's eval settings
    numbers = json.loads(capsys.readouterr().out)
    assert numbers["problems"] == stored["known"]["n"] == 6 and numbers["max_tokens"] == 16
    assert main([*base, "--task", "tinyworld-arith", "--limit", "4", "-n", "2", "--max-tokens", "48"]) == 0
    numbers = json.loads(capsys.readouterr().out)
    assert numbers["samples"] == 8 and "pass@2" in numbers and numbers["temperature"] == 0.8
    summary = json.loads(Path(run.summary).read_text())
    assert set(summary["eval"]) == {"sft:tinyworld-arith", "sft:tinyworld-unknown", "sft:tinyworld-facts"}
    assert "`raychat eval` results" in run.report.read_text()


def test_distill_on_this_run_then_skipped_and_resumed(post_trained: RunDir, write_module) -> None:
    """The distill stage end to end (tests/test_distill.py's checks), teacher models/sft, on this run:
    last in the module, as it adds models the tests above do not expect."""
    from test_distill import check_end_to_end_then_skipped_and_resumed

    check_end_to_end_then_skipped_and_resumed(post_trained.root, SETTINGS, write_module, n_heldout=6)
