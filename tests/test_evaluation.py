"""pass@k and accuracy with standard errors, against brute-force counting and worked values."""

from __future__ import annotations

import itertools
import math

import pytest

from lm.evaluation import mean_and_stderr, pass_at_k, summarize


@pytest.mark.parametrize(("n", "c"), [(1, 0), (1, 1), (5, 0), (5, 2), (6, 3), (8, 7), (8, 8)])
def test_pass_at_k_is_the_share_of_k_subsets_holding_a_right_sample(n: int, c: int) -> None:
    samples = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(samples, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_worked_values_and_large_n() -> None:
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction right
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))  # 1 - 21/252
    assert pass_at_k(10, 0, 10) == 0.0 and pass_at_k(10, 1, 10) == 1.0
    # exact where C(n, k) is far beyond a float
    assert pass_at_k(2000, 1, 1000) == pytest.approx(0.5)
    for bad in ((5, 6, 1), (5, 2, 0), (5, 2, 6), (5, -1, 1)):
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_standard_error_of_an_accuracy() -> None:
    mean, stderr = mean_and_stderr([1, 0, 1, 1])
    # sample variance of (1, 0, 1, 1): ((3 x 0.25^2) + 0.75^2) / 3 = 0.25; stderr = sqrt(0.25 / 4)
    assert (mean, stderr) == (0.75, pytest.approx(0.25))
    assert mean_and_stderr([0.4]) == (0.4, 0.0)
    with pytest.raises(ValueError):
        mean_and_stderr([])


def test_summarize_problems_with_several_samples() -> None:
    out = summarize([[True, False, True, False], [False] * 4, [True, True, True, False]], ks=(1, 2, 8))
    assert out["problems"] == 3 and out["samples"] == 12
    assert out["accuracy"] == pytest.approx((0.5 + 0 + 0.75) / 3)
    assert out["pass@1"] == pytest.approx(out["accuracy"])
    p2 = [1 - math.comb(2, 2) / math.comb(4, 2), 0.0, 1.0]  # 5/6, 0, 1
    assert out["pass@2"] == pytest.approx(sum(p2) / 3)
    assert out["pass@2_stderr"] == pytest.approx(mean_and_stderr(p2)[1])
    assert out["pass@8_skipped"] == 4 and "pass@8" not in out
    assert summarize([[1.0, 0.0], [0.7, 0.2]])["accuracy"] == pytest.approx(0.5)  # scores >= 0.5 are right
    with pytest.raises(ValueError):
        summarize([[True], []])
