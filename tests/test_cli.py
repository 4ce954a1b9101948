"""``raychat``'s command line: what every subcommand shares (pipelines/cli.py)."""

from __future__ import annotations

import pytest

from pipelines.cli import main


@pytest.mark.parametrize(
    ("argv", "stray"),
    [
        (["sample", "--model", "m", "hello", "extra"], "hello extra"),
        (["sample", "--model", "m", "--bogus"], "--bogus"),
        (["tokens", "hello", "extra"], "extra"),
        (["eval", "--model", "m", "--task", "gsm8k", "extra"], "extra"),
        (["report", "extra"], "extra"),
        (["clean", "--run-dir", "r", "extra"], "extra"),  # a stage's command
        (["my_stage", "extra"], "extra"),  # a stage only a run config declares
    ],
)
def test_a_stray_argument_is_refused_by_the_command_it_was_given_to(argv, stray, capsys) -> None:
    """Was the top-level usage (every command listed, none named) and ``raychat: error: ...``."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: raychat {argv[0]} "), err
    assert err.strip().splitlines()[-1] == f"raychat {argv[0]}: error: unrecognized arguments: {stray}"
    assert "{world,clean" not in err  # not the list of commands


def test_a_stray_option_before_the_command_is_the_top_levels(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--bogus", "sample", "--model", "m"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("raychat: error: unrecognized arguments: --bogus")
    assert err.startswith("usage: raychat [-h]")  # not the sample usage, which has no --bogus either


def test_the_parsed_command_line_holds_no_parser() -> None:
    """What parse_args returns can be pickled (to a Ray task, say): the parser it used is not in it."""
    import pickle

    from pipelines.cli import parse_args

    args = parse_args(["sample", "--model", "m"])
    assert not hasattr(args, "command_parser") and pickle.loads(pickle.dumps(args)).model == "m"


def test_a_reader_that_stops_early_ends_the_command_quietly() -> None:
    """`raychat sample --json | head -1` ended in a BrokenPipeError traceback."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, pipelines.sample as s\n"
        "def write(args):\n"
        "    for i in range(100000): print('{\"sample\": %d}' % i)\n"
        "s.main_sample = write\n"
        "from pipelines.cli import main\n"
        "sys.exit(main(['sample', '--model', 'm', '--prompt', 'hello']))\n"
    )
    repo = Path(__file__).resolve().parents[1]
    writer = subprocess.Popen(
        [sys.executable, "-c", code], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert writer.stdout is not None
    writer.stdout.readline()
    writer.stdout.close()  # what `head -1` does
    _, err = writer.communicate(timeout=60)
    assert writer.returncode == 141 and b"Traceback" not in err and b"BrokenPipe" not in err, err
