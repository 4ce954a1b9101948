"""Rule rewards on real GSM8K answers, the tiny world's arithmetic, wrong and malformed completions,
the R1 format, user rewards by dotted path, weighted combinations, and answers compared off the main
thread within a time limit."""

from __future__ import annotations

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError

from lm.answers import (
    VERIFY_STATS,
    answers_match,
    extract_answer,
    find_numbers,
    gsm8k_final,
    parse_number,
    reference_answer,
)
from lm.rewards import (
    REWARDS,
    ItemScore,
    RewardConfig,
    RewardItem,
    RuleScorer,
    get_reward,
    gsm8k_accuracy,
    merge_scores,
    numeric_accuracy,
    r1_format,
    register_reward,
    with_model_scores,
    world_arithmetic,
)
from lm.timelimit import TimeLimitExceeded, call_with_time_limit
from pipelines.world.arithmetic import Cast, problems


@pytest.fixture(scope="module")
def gsm8k(shared_data: Path) -> list[dict]:
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 7473
    return rows


def _final_as_written(answer: str) -> str:
    return answer.split("####")[-1].strip()


# --- real GSM8K answers ---------------------------------------------------------------------------


def test_every_gsm8k_final_answer_is_extracted(gsm8k: list[dict]) -> None:
    for row in gsm8k:
        written = _final_as_written(row["answer"])
        assert gsm8k_final(row["answer"]) == written, row["answer"][-80:]
        assert reference_answer(row["answer"]) == written
        assert parse_number(written) == int(written.replace(",", ""))
    with_commas = [r for r in gsm8k if "," in _final_as_written(r["answer"])]
    assert len(with_commas) == 79  # "#### 1,080" and the like, normalised like any other


def test_every_gsm8k_reference_scores_one_against_itself(gsm8k: list[dict]) -> None:
    for row in gsm8k:
        assert numeric_accuracy(row["answer"], row["answer"]) == 1.0
        assert gsm8k_accuracy(row["answer"], row["answer"]) == 1.0
        assert world_arithmetic(row["answer"], row["answer"]) == 1.0


def test_a_wrong_final_answer_scores_zero_on_every_gsm8k_problem(gsm8k: list[dict]) -> None:
    for row in gsm8k:
        body, final = row["answer"].rsplit("####", 1)
        wrong = int(final.strip().replace(",", "")) + 1
        completion = f"{body}#### {wrong}"
        assert numeric_accuracy(completion, row["answer"]) == 0.0
        assert gsm8k_accuracy(completion, row["answer"]) == 0.0


def test_the_final_answer_in_other_forms_still_scores_one(gsm8k: list[dict]) -> None:
    rng = random.Random(0)
    for row in rng.sample(gsm8k, 500):
        n = int(_final_as_written(row["answer"]).replace(",", ""))
        reasoning = row["answer"].rsplit("####", 1)[0]
        for completion in (
            f"{reasoning}So the answer is ${n:,}.",  # "$1,080."
            f"<think>{reasoning}</think><answer>{n}.0</answer>",
            f"<think>{reasoning}</think>\n<answer>The answer is {n:,} dollars.</answer>",
            f"{reasoning}The final answer is \\boxed{{{n}}}",
        ):
            assert numeric_accuracy(completion, row["answer"]) == 1.0, completion[-60:]
            assert numeric_accuracy(completion, str(n)) == 1.0  # a bare reference works too
        # gsm8k_accuracy is strict: no "####" line, no reward
        assert gsm8k_accuracy(f"{reasoning}So the answer is {n}.", row["answer"]) == 0.0


def test_the_last_number_of_real_reasoning_is_mostly_its_final_answer(gsm8k: list[dict]) -> None:
    # Without a final-answer line, numeric_accuracy falls back on the last number: on GSM8K's own
    # reasoning that is the final answer for nearly every problem (the rest end on another number).
    hits = sum(numeric_accuracy(r["answer"].rsplit("####", 1)[0], r["answer"]) for r in gsm8k)
    assert hits / len(gsm8k) > 0.95


# --- the tiny world's arithmetic ---------------------------------------------------------------------


def test_world_arithmetic_problems() -> None:
    casts = [Cast("Ada", "she", "Bo", "Varn", "Oskel", "the Guild of Lamps", "the comet")]
    items = problems(random.Random(3), casts, 200)
    assert "world_arithmetic" in REWARDS
    for p in items:
        assert world_arithmetic(p["answer"], p["answer"]) == 1.0
        assert world_arithmetic(f"<think>steps</think><answer>{p['final']}</answer>", p["answer"]) == 1.0
        assert world_arithmetic(f"... so {p['final'] + 2} in all.", p["answer"]) == 0.0
        assert gsm8k_accuracy(p["answer"], p["answer"]) == 1.0


# --- wrong and malformed completions -----------------------------------------------------------------


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "I do not know.",
        "<answer></answer>",
        "<answer>seventy-two</answer>",
        "#### ",
        "#### seventy two",
        "The answer is <answer>72",  # unclosed tag: no tag, last number 72 is read (below)
        "\\boxed{",
        "\x00\x01\ufffd\ud800 garbage",
        "7" * 5000,
        "<think>" * 1000,
        "72 " + "word " * 100000,  # long; the last number is the 72 at the start
        # inputs that made the answer readers' regular expressions backtrack for 8-42 s each
        "1" + ",000" * 25_000 + "0",
        "<answer>" + "\\(" * 50_000 + "</answer>",
        "<answer>" * 12_500,
        "#### 5" + " " * 100_000 + "x",
        # a window of the last-number search that began at its own end looped for ever
        "a" * 5000 + " ",
        "The result: 42. " + "=" * 1200 + "\n",
        "x " * 10 + "b" * 999 + " ",
    ],
)
def test_malformed_completions_never_raise(completion: str) -> None:
    for name in ("numeric_accuracy", "gsm8k_accuracy", "r1_format", "world_arithmetic"):
        value = get_reward(name)(completion, "#### 72")
        assert value in (0.0, 1.0)
    expected = 1.0 if completion.startswith(("The answer is", "72 ")) else 0.0
    assert numeric_accuracy(completion, "#### 72") == expected


def test_number_normalisation() -> None:
    cases = {
        "1,000": 1000,
        "$5": 5,
        "5.0": 5,
        "-3": -3,
        "−3": -3,
        "50%": 0.5,
        "3/4": 0.75,
        "$1,234.50": 1234.5,
        "\\$1{,}000": 1000,
        "12.": 12,
        ".5": 0.5,
    }
    for text, value in cases.items():
        assert parse_number(text) == value, text
    for text in ("5 3", "1,2,3", "abc", "1/0", "", "x"):
        assert parse_number(text) is None, text
    assert find_numbers("from 10 - 3 to x = -3, 1,000, and 5-2") == ["10", "3", "-3", "1,000", "5", "2"]
    assert extract_answer("<answer>The total is 18 coins.</answer>") == "18"
    assert extract_answer("<answer>so it is $\\frac{1}{2}$ of it</answer>") == "\\frac{1}{2}"


def test_percentages_match_either_reading() -> None:
    assert answers_match("75%", "75")  # "What percent ...? #### 75"
    assert answers_match("50%", "0.5")
    assert answers_match("50", "50%")
    assert not answers_match("50%", "5")


def test_symbolic_answers_use_math_verify() -> None:
    assert answers_match("\\frac{1}{2}", "0.5")
    assert answers_match("0.5", "1/2")
    assert answers_match("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2")
    assert answers_match("x = 5", "5")
    assert not answers_match("\\frac{1}{3}", "0.5")
    assert numeric_accuracy("so \\boxed{\\frac{3}{4}}", "0.75") == 1.0
    assert numeric_accuracy("<answer>$\\dfrac{6}{8}$</answer>", "\\frac{3}{4}") == 1.0
    assert numeric_accuracy("so \\boxed{\\frac{2}{3}}", "0.75") == 0.0


@pytest.mark.timeout(120)
def test_answers_that_would_never_finish_are_refused() -> None:
    # Comparing these would compute a number with hundreds of millions of digits inside one C call,
    # which no time limit in the process can stop: they are refused before sympy evaluates them.
    refused = VERIFY_STATS["refused"]
    for huge in ("9^{9^{9}}", "2^{2^{2^{100}}}", "(10^{1000000})!", "10^{10^{10}}"):
        assert numeric_accuracy(f"\\boxed{{{huge}}}", "\\frac{1}{2}") == 0.0
    assert VERIFY_STATS["refused"] - refused == 4


def test_comparison_works_off_the_main_thread() -> None:
    # math-verify's own timeout (signal.alarm) raises outside the main thread; ours does not.
    def score(i: int) -> float:
        assert threading.current_thread() is not threading.main_thread()
        return numeric_accuracy(f"\\boxed{{\\frac{{{i}}}{{2}}}}", str(i / 2))

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(score, range(1, 9))) == [1.0] * 8


def test_time_limit_interrupts_python_code_on_any_thread() -> None:
    def spin() -> None:
        while True:
            pass

    def run() -> str:
        try:
            call_with_time_limit(spin, 0.3)
        except TimeLimitExceeded:
            return "stopped"
        return "finished"

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(run).result(timeout=60) == "stopped"
    assert call_with_time_limit(lambda: 7, 5.0) == 7
    with pytest.raises(ZeroDivisionError):
        call_with_time_limit(lambda: 1 / 0, 5.0)


# --- R1 format ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>12*6=72</think><answer>72</answer>", 1.0),
        ("<think>\nlong\nreasoning\n</think>\n\n<answer>\n72\n</answer>\n", 1.0),
        ("<think></think><answer></answer>", 1.0),
        ("<answer>72</answer>", 0.0),  # no thinking
        ("<think>72</think>", 0.0),  # no answer
        ("<answer>72</answer><think>x</think>", 0.0),  # wrong order
        ("<think>a</think><think>b</think><answer>72</answer>", 0.0),  # two thinking blocks
        ("<think>a<answer>1</answer></think><answer>72</answer>", 0.0),  # nested
        ("Sure! <think>a</think><answer>72</answer>", 0.0),  # text outside the blocks
        ("<think>a</think><answer>72</answer> Hope that helps", 0.0),
        ("<think>a</think><answer>72", 0.0),  # cut off
        ("", 0.0),
    ],
)
def test_r1_format(completion: str, expected: float) -> None:
    assert r1_format(completion, "") == expected


def test_r1_format_pattern_is_configurable() -> None:
    pattern = r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>"
    assert r1_format("<reasoning>x</reasoning><answer>1</answer>", "", pattern=pattern) == 1.0
    assert r1_format("<think>x</think><answer>1</answer>", "", pattern=pattern) == 0.0
    config = RewardConfig(rules=[{"name": "r1_format", "args": {"pattern": pattern}}])
    [score] = RuleScorer(config).score([RewardItem(0, "<reasoning>x</reasoning><answer>1</answer>")])
    assert score.reward == 1.0


# --- registry, dotted paths, configuration and combination ------------------------------------------

USER_MODULE = """
def length_penalty(completion, reference, per_char=0.01):
    return -per_char * len(completion)

def explode(completion, reference):
    raise RuntimeError("my reward is broken")

def not_a_number(completion, reference):
    return float("nan")

def huge(completion, reference):
    return 1e308

def spin(completion, reference):
    while True:
        pass
"""


@pytest.fixture()
def user_module(write_module) -> str:
    return write_module(USER_MODULE, "user_rewards")


def test_registry_and_dotted_paths(user_module: str) -> None:
    assert {"numeric_accuracy", "gsm8k_accuracy", "r1_format", "world_arithmetic"} <= set(REWARDS)
    assert get_reward(f"{user_module}:length_penalty")("abcd", "") == pytest.approx(-0.04)
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        get_reward("nope")
    with pytest.raises(ValueError, match="cannot import module"):
        get_reward("no_such_module_xyz:f")

    @register_reward("test_constant")
    def constant(completion: str, reference: str) -> float:
        return 0.25

    try:
        assert get_reward("test_constant") is constant
        with pytest.raises(ValueError, match="already registered"):
            register_reward("test_constant")(lambda c, r: 0.0)
    finally:
        REWARDS.pop("test_constant")


def test_config_errors_name_the_problem(user_module: str) -> None:
    with pytest.raises(ValidationError, match="unknown reward 'numeric_acuracy'"):
        RewardConfig(rules=[{"name": "numeric_acuracy"}])
    with pytest.raises(ValidationError, match="does not take args"):
        RewardConfig(rules=[{"name": "numeric_accuracy", "args": {"tolerance": 0.1}}])
    with pytest.raises(ValidationError, match="distinct"):
        RewardConfig(rules=[{"name": "r1_format"}, {"name": "r1_format", "weight": 2}])
    with pytest.raises(ValidationError, match="weigth"):
        RewardConfig(rules=[{"name": "r1_format", "weigth": 2}])
    with pytest.raises(ValidationError, match="at least one rule"):  # was a traceback in GRPO
        RewardConfig(rules=[])
    # the same function twice is fine with labels
    RewardConfig(
        rules=[{"name": "r1_format"}, {"name": "r1_format", "label": "strict", "args": {"pattern": "x"}}]
    )


def test_weighted_combination(user_module: str) -> None:
    config = RewardConfig(
        rules=[
            {"name": "numeric_accuracy", "weight": 1.0},
            {"name": "r1_format", "weight": 0.5},
            {
                "name": f"{user_module}:length_penalty",
                "weight": 2.0,
                "args": {"per_char": 0.001},
                "label": "len",
            },
        ],
        rm={"weight": 0.3},
    )
    right_formatted = "<think>6*12</think><answer>72</answer>"  # 38 characters
    wrong_unformatted = "It is 71."  # 9 characters
    scores = RuleScorer(config).score(
        [RewardItem("a", right_formatted, "#### 72"), RewardItem("b", wrong_unformatted, "#### 72")]
    )
    assert [s.id for s in scores] == ["a", "b"]
    assert scores[0].components == {"numeric_accuracy": 1.0, "r1_format": 1.0, "len": pytest.approx(-0.038)}
    assert scores[0].reward == pytest.approx(1.0 * 1 + 0.5 * 1 + 2.0 * -0.038)
    assert scores[1].reward == pytest.approx(1.0 * 0 + 0.5 * 0 + 2.0 * -0.009)
    # the reward model's score joins with its own weight
    rm = ItemScore("a", reward=0.3 * 0.8, components={"rm": 0.8})
    merged = merge_scores(scores[0], rm)
    assert merged.reward == pytest.approx(config.combine(merged.components))
    assert merged.reward == pytest.approx(1.0 + 0.5 - 0.076 + 0.24)


def _group_scores(rules: list[float], raw: list[float | None]) -> tuple[list[ItemScore], list[ItemScore]]:
    """A group's rule scores (one rule, weight 1) and reward-model scores (None: a timed-out call)."""
    by_rules = [ItemScore(j, r, components={"acc": r}) for j, r in enumerate(rules)]
    model = [
        ItemScore(j, 0.0, "timeout", error="no answer in time")
        if v is None
        else ItemScore(j, 0.5 * v, components={"rm": v})
        for j, v in enumerate(raw)
    ]
    return by_rules, model


def test_a_group_adds_the_reward_models_score_standardised_within_the_group() -> None:
    config = RewardConfig(rules=[{"name": "numeric_accuracy", "label": "acc"}], rm={"weight": 0.5})
    rules, model = _group_scores([1.0, 0.0, 1.0, 0.0], [2.0, 0.0, 4.0, 2.0])  # mean 2, std sqrt(2)
    out = with_model_scores(config, rules, model)
    z = [0.0, -(2**0.5), 2**0.5, 0.0]
    assert [s.reward for s in out] == pytest.approx(
        [r + 0.5 * x for r, x in zip([1, 0, 1, 0], z, strict=True)]
    )
    assert [s.components for s in out] == [
        {"acc": r, "rm": v} for r, v in zip([1.0, 0, 1, 0], [2.0, 0, 4, 2], strict=True)
    ]
    assert all(s.status == "ok" and s.error is None for s in out)
    # a Bradley-Terry score's offset and scale are arbitrary: the group's rewards do not depend on them
    shifted = with_model_scores(
        config, rules, _group_scores([1, 0, 1, 0], [3 * v + 100 for v in (2, 0, 4, 2)])[1]
    )
    assert [s.reward for s in shifted] == pytest.approx([s.reward for s in out])
    # raw: the score times its weight, as it is
    raw = RewardConfig(rules=config.rules, rm={"weight": 0.5, "normalize": "none"})
    assert [s.reward for s in with_model_scores(raw, rules, model)] == pytest.approx([2.0, 0.0, 3.0, 1.0])
    # a group the model cannot tell apart gets nothing from it, and float noise is not blown up to +-1
    alike = with_model_scores(config, rules, _group_scores([1, 0, 1, 0], [1.0, 1.0, 1.0 + 1e-7, 1.0])[1])
    assert [s.reward for s in alike] == pytest.approx([1.0, 0.0, 1.0, 0.0], abs=1e-4)


def test_a_failed_reward_model_call_is_neutral_and_counted_and_a_failed_rule_still_zeroes() -> None:
    config = RewardConfig(rules=[{"name": "numeric_accuracy", "label": "acc"}], rm={"weight": 1.0})
    rules, model = _group_scores([1.0, 1.0, 0.0, 0.0], [None, 1.0, 3.0, None])
    rules[3] = ItemScore(3, 0.0, "error", error="acc: ValueError: boom")
    out = with_model_scores(config, rules, model)
    # the model scored items 1 and 2 (mean 2, std 1): z = -1, +1; item 0 keeps its rule reward, rm term 0
    assert [s.reward for s in out] == pytest.approx([1.0, 0.0, 1.0, 0.0])
    assert "rm" not in out[0].components and out[0].status == "ok"
    assert out[0].error.startswith("reward model timeout: no answer in time")
    assert (out[3].status, out[3].reward, out[3].error) == ("error", 0.0, "acc: ValueError: boom")
    assert sum("rm" not in s.components for s in out) == 2  # how GRPO counts failed calls (rm_failed)
    # a group the model could not score at all keeps its rule rewards
    nothing = with_model_scores(config, *_group_scores([1.0, 0.0], [None, None]))
    assert [s.reward for s in nothing] == [1.0, 0.0]
    with pytest.raises(ValueError, match="different items"):
        with_model_scores(config, rules[:2], list(reversed(model[:2])))
    with pytest.raises(ValueError, match="rewards.rm"):
        with_model_scores(RewardConfig(), rules, model)


def test_a_failing_reward_scores_zero_and_says_why(user_module: str) -> None:
    config = RewardConfig(rules=[{"name": "numeric_accuracy"}, {"name": f"{user_module}:explode"}])
    [score] = RuleScorer(config).score([RewardItem(1, "72", "72")])
    assert (score.status, score.reward) == ("error", 0.0)
    assert "my reward is broken" in score.error
    config = RewardConfig(rules=[{"name": f"{user_module}:not_a_number"}])
    [score] = RuleScorer(config).score([RewardItem(2, "72", "72")])
    assert score.status == "error" and "nan" in score.error
    # a failure in one scorer makes the merged item fail too
    assert merge_scores(ItemScore(1, 1.0), ItemScore(1, 0.0, "timeout", error="slow")).status == "timeout"


def test_a_reward_past_its_time_limit_scores_zero(user_module: str) -> None:
    config = RewardConfig(rules=[{"name": f"{user_module}:spin"}], time_limit_s=0.3)
    scores = RuleScorer(config).score([RewardItem(1, "a"), RewardItem(2, "b")])
    assert [(s.id, s.status, s.reward) for s in scores] == [(1, "timeout", 0.0), (2, "timeout", 0.0)]


def test_the_config_knows_the_built_in_rewards_before_they_load() -> None:
    """lm/reward_config.py names the built-ins so a run config checks them without importing this module."""
    from lm.reward_config import BUILT_IN_REWARDS
    from lm.rewards import REWARDS

    assert set(BUILT_IN_REWARDS) <= set(REWARDS)
    assert set(BUILT_IN_REWARDS) == {n for n, fn in REWARDS.items() if fn.__module__ == "lm.rewards"}


def test_a_number_with_its_unit_is_the_answer_and_an_infinite_sum_scores_zero(
    user_module, write_module
) -> None:
    """Found by a hostile test of the rewards: "<answer>18 coins</answer>" scored 0 (one word after the
    number was not read as a unit); two finite rewards weighted past a float made an infinite reward,
    NaN advantages and NaN gradients; a bad r1_format pattern and a reward module with a syntax error
    got through the config check."""
    for tagged in (
        "18 coins",
        "18 dollars",
        "18 km/h",
        "18 (coins)",
        "18 gold coins",
        "The total is 18 coins.",
    ):
        assert numeric_accuracy(f"<answer>{tagged}</answer>", "18") == 1.0, tagged
    assert numeric_accuracy("<answer>-5 degrees</answer>", "-5") == 1.0
    for not_a_unit in ("2 pi", "3 x", "10 million", "4 e"):  # mathematics or a scale, not a unit
        assert numeric_accuracy(f"<answer>{not_a_unit}</answer>", not_a_unit.split()[0]) == 0.0, not_a_unit
    assert numeric_accuracy("The result: 42. " + "=" * 1200 + "\n", "42") == 1.0
    assert numeric_accuracy("<answer>x<answer>7</answer>", "7") == 1.0  # the last opening tag
    scorer = RuleScorer({"rules": [{"name": f"{user_module}:huge", "weight": 2.0}]})
    (item,) = scorer.score([RewardItem("a", "anything", "")])
    assert (item.status, item.reward) == ("error", 0.0) and "combined reward is inf" in item.error
    with pytest.raises(ValidationError, match="args.pattern is not a regular expression"):
        RewardConfig(rules=[{"name": "r1_format", "args": {"pattern": "("}}])
    broken = write_module("def f(completion, reference:\n    return 1\n", "broken_syntax_reward")
    with pytest.raises(ValidationError, match="cannot import module .*SyntaxError"):
        RewardConfig(rules=[{"name": f"{broken}:f"}])
