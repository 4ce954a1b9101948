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
    assert main(["report", "--run-dir", str(run)]) == 0
    assert '"answers": 12' in (run / "report.md").read_text()
