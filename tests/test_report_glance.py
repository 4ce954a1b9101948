"""report.md opens with one screen: what each stage that ran did to its number."""

from __future__ import annotations

from pipelines.config import load_config
from pipelines.report import at_a_glance
from pipelines.run_dir import RunDir, read_summary, update_summary
from pipelines.stages import Graph


def test_the_summary_says_what_each_stage_did(tmp_path) -> None:
    run = RunDir(tmp_path)
    update_summary(run, "world", {"pages": 2000, "entities": 240, "seconds": 0.7})
    update_summary(
        run, "clean", {"records": 2000, "clean": 1173, "rejected": 807, "record_errors": 20, "seconds": 12.5}
    )
    update_summary(run, "pretrain", {"steps": 150, "seconds": 90.0})  # an older run's numbers: no crash
    text = at_a_glance(Graph(load_config(None, [f"run_dir={tmp_path}"])), read_summary(run))
    lines = text.splitlines()
    assert lines[0] == "## At a glance"
    assert "| world | wrote a crawl of 2,000 pages about 240 made-up entities | 1 |" in lines
    assert "| clean | kept 1,173 of 2,000 records (59%); rejected 807, 20 unreadable | 12 |" in lines
    assert any(line.startswith("| pretrain | (KeyError") for line in lines)
    assert not any(line.startswith(("| tokenize", "| sft")) for line in lines)  # only stages that ran


def test_the_grpo_line_gives_the_standard_error_and_the_control() -> None:
    """A gain reads only beside its noise and beside what plain SFT did with the same CPU time."""
    from pipelines.grpo.job import summary_line

    numbers = {
        "heldout_accuracy_before": 0.125,
        "heldout_accuracy_after": 0.14,
        "heldout_accuracy_after_stderr": 0.0245,
        "heldout_gain_stderr": 0.0337,
        "gain_over_two_stderr": False,
        "heldout_problems": 200,
        "reward_first_steps": 0.053,
        "reward_last_steps": 0.078,
        "steps": 30,
    }
    line = summary_line(numbers)
    assert line == (
        "held-out accuracy 0.125 -> 0.140 (200 problems, standard error of the gain 0.034, within noise); "
        "training reward 0.053 -> 0.078 over 30 steps"
    )
    assert summary_line({**numbers, "control_sft_accuracy": 0.4}).endswith(
        "; the SFT control for the same CPU time 0.400"
    )


def test_report_on_a_run_dir_with_no_numbers_fails_instead_of_writing_an_empty_report(
    tmp_path, capsys
) -> None:
    from pipelines.cli import main

    typo = tmp_path / "runs" / "tinny"
    assert main(["report", "--run-dir", str(typo)]) == 2
    err = capsys.readouterr().err
    assert f"nothing to report in {typo}" in err and "--run-dir" in err
    assert not typo.exists()  # nothing written where the user did not mean

    run = tmp_path / "run"
    update_summary(RunDir(run), "probe", {"answers": 12})  # numbers of a stage this graph lacks
    update_summary(RunDir(run), "notes", "not a mapping")
    assert main(["report", "--run-dir", str(run)]) == 0
    text = (run / "report.md").read_text()
    # a mapping is its own section, as a table (sft's `search` numbers were raw JSON under "other")
    assert "## probe\n\n| metric | value |" in text and "| answers | 12 |" in text
    assert '"notes": "not a mapping"' in text


def test_the_sft_line_says_when_there_was_no_held_out_evaluation() -> None:
    """SFT on a user's own data (no tiny world) has no held-out sets: the line says so instead of
    listing identity, search and arithmetic as '-'."""
    from pipelines.sft.job import summary_line

    line = summary_line({"val_loss_start": 9.5, "val_loss": 1.25})
    assert line.startswith("chat model: validation loss 9.50 -> 1.25; no held-out evaluation")
    assert "raychat eval" in line and "identity" not in line
    full = summary_line({"val_loss_start": 9.5, "val_loss": 1.25, "identity_accuracy": 0.9})
    assert "identity 0.90" in full
