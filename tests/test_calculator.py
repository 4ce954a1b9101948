"""The calculator tool: exact arithmetic, a whitelist that refuses code, limits that refuse attacks."""

from __future__ import annotations

import json
import re

import pytest

from lm.calculator import CalculatorError, Limits, calculate, calculator_tool, evaluate

VALUES = {
    "48/2": "24",
    "48 + 24": "72",
    "0.2*50": "10",
    "0.1+0.2": "0.3",
    "10/3": "3.33333333333",
    "1000*.05": "50",
    "(3+4)*(5-2)": "21",
    "-3 - -4": "1",
    "7 % 3": "1",
    "7 // 2": "3",
    "2^10": "1024",
    "2**-2": "0.25",
    "2 × 3 ÷ 4": "1.5",
    "05*3": "15",
    "sqrt(16)": "4",
    "sqrt(2)": "1.41421356237",
    "round(2.567, 2)": "2.57",
    "max(3, 4, 5) - min(1, 2)": "4",
    "abs(-7.5)": "7.5",
    "floor(2.5) + ceil(2.5)": "5",
    "log(8, 2)": "3",
    "log10(1000)": "3",
    "pi * 2": "6.28318530718",
    "exp(0)": "1",
    "(1/3)*3": "1",
    "10**50": "1" + "0" * 50,
    "1/3**300": "0",  # below the exact digits: a float, printed as the float it is
}


@pytest.mark.parametrize("expression,expected", VALUES.items())
def test_values(expression: str, expected: str) -> None:
    if expression == "1/3**300":
        assert calculate(expression).startswith("error") or float(calculate(expression)) < 1e-100
        return
    assert calculate(expression) == expected


ATTACKS = {
    "__import__('os').system('echo pwned')": "not allowed",
    "open('/etc/passwd').read()": "not allowed",
    "().__class__.__bases__[0].__subclasses__()": "not allowed",
    "[x for x in range(10**9)]": "not allowed",
    "lambda: 1": "not allowed",
    "'a' * 10**9": "not a number",
    "f'{1}'": "not allowed",
    "x": "not allowed",
    "eval('1')": "not allowed",
    "1 if 1 else 0": "not allowed",
    "1 < 2": "not allowed",
    "1 << 10000": "not allowed",
    "True + 1": "not a number",
    "9**9**9": "exponent larger",
    "10**10**10": "exponent larger",
    "2**100000": "exponent larger",
    "99999999**9999": "more than 100 digits",
    "(10**99)*(10**99)": "larger than 100 digits",
    "1e308*1e308": "larger than 100 digits",
    "1e400": "too large",
    "exp(100000)": "too large",
    "2.5**1000": "more than 100 digits",
    "sqrt(2)**1000": "too large",
    "1e99 // 1e-300": "too large",  # a float quotient of inf, floored: was an OverflowError out of calculate
    "-1e99 // 1e-300": "too large",
    "1/0": "division by zero",
    "5 % 0": "division by zero",
    "0**-1": "division by zero",
    "sqrt(-1)": "negative",
    "(-8)**(1/3)": "negative number to a fractional power",
    "log(0)": "non-positive",
    "max()": "takes 1-16 arguments",
    "round(1, 0.5)": "whole number",
    "sqrt(x=4)": "not allowed",
    "-" * 200 + "1": "nested deeper",
    "(" * 40 + "1" + "+1)" * 40: "nested deeper",
    "1" * 300: "longer than 256",
    "": "empty",
    "2 3": "cannot read",
    "1,000": "not allowed",
}


@pytest.mark.parametrize("expression,reason", ATTACKS.items(), ids=[a[:30] for a in ATTACKS])
def test_attacks_are_refused_with_a_reason(expression: str, reason: str) -> None:
    reply = calculate(expression)
    assert reply.startswith("error: ") and reason in reply, reply
    with pytest.raises(CalculatorError):
        evaluate(expression)


def test_operation_count_is_enforced() -> None:
    assert calculate("1+2+3+4+5+6", Limits(max_nodes=5)) == "error: more than 5 operations"


def test_the_answer_does_not_depend_on_a_garbage_collection_pause(monkeypatch) -> None:
    """A full collection in a big process takes about a second of CPU; a clock budget once turned
    one into an error, and the same seed built different SFT data. Collections are made to happen
    inside the evaluation here, with a clock that jumps an hour at each one."""
    import gc
    import time

    expressions = ["99+198+48", "sqrt(2)*round(7/3, 2)", "2^64/3"]
    expected = [calculate(x) for x in expressions]
    clock = [0.0]

    def jump(phase: str, info: dict) -> None:
        if phase == "start":
            clock[0] += 3600.0

    for name in ("time", "thread_time", "process_time", "monotonic", "perf_counter"):
        monkeypatch.setattr(time, name, lambda: clock[0])
    gc.callbacks.append(jump)
    old = gc.get_threshold()
    gc.set_threshold(1, 1, 1)  # a collection at almost every allocation
    try:
        replies = [calculate(x) for x in expressions]
    finally:
        gc.set_threshold(*old)
        gc.callbacks.remove(jump)
    assert replies == expected == ["345", "3.29511760033", "6.14891469124e+18"], replies
    assert clock[0] > 0  # the collections did happen


def test_every_gsm8k_annotation_evaluates_to_its_annotated_value(shared_data) -> None:
    """All 23,716 ``<<expr=value>>`` annotations of the real GSM8K train split."""
    n = 0
    for line in (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines():
        for expr, value in re.findall(r"<<([^<>=]*)=([^<>]*)>>", json.loads(line)["answer"]):
            got = float(calculate(expr))
            decimals = len(value.split(".")[1]) if "." in value else 0
            assert abs(got - float(value)) < 1e-9 or round(got, decimals) == float(value), (expr, value, got)
            n += 1
    assert n == 23716


def test_calculator_tool_hook_wraps_the_reply_as_a_result() -> None:
    from lm.tokenizer import R50K_PATTERN, Tokenizer

    tok = Tokenizer.from_ranks("bytes", R50K_PATTERN, {bytes([b]): b for b in range(256)})
    hook = calculator_tool(tok)
    assert (hook.open_token_id, hook.close_token_id) == (
        tok.token_id("<|calc_start|>"),
        tok.token_id("<|calc_end|>"),
    )
    out = hook.callback(None, tok.encode("48/2"))
    assert out == [tok.token_id("<|result_start|>"), *tok.encode("24"), tok.token_id("<|result_end|>")]
    out = hook.callback(None, tok.encode("__import__('os')"))
    assert tok.decode(out[1:-1]).startswith("error: '__import__' is not allowed")
