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
