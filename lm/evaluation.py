"""Accuracy and pass@k from n samples per problem, with standard errors (used by ``raychat eval``).

    from lm.evaluation import pass_at_k, summarize
    pass_at_k(n=10, c=3, k=5)                      # 0.9167: chance that 5 of the 10 samples hold a right one
    summarize([[True, False, True], [False] * 3], ks=(1, 2))
    # {"problems": 2, "samples": 6, "accuracy": 0.333, "accuracy_stderr": ..., "pass@1": 0.333, "pass@2": 0.333, ...}

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on
Code"): with n samples of which c are right, 1 - C(n-c, k) / C(n, k), computed as a product so it
stays exact in floating point for large n. Averaged over problems it estimates the chance that k
fresh samples contain a right one. Standard errors are the sample standard deviation over problems
divided by sqrt(problems) (as lm-evaluation-harness reports them), i.e. they treat problems as the
random draw, which is what changes when someone else evaluates on other problems.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: ``n`` samples, ``c`` right, ``k <= n``."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c={c} right answers out of n={n} samples is impossible")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k={k} must be between 1 and the number of samples n={n}")
    if n - c < k:
        return 1.0  # every set of k samples holds a right one
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """The mean and its standard error (sample standard deviation / sqrt(count); 0 for one value)."""
    if not values:
        raise ValueError("mean_and_stderr: no values")
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    variance = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def summarize(correct: Iterable[Sequence[bool | float]], ks: Sequence[int] = (1,)) -> dict[str, float | int]:
    """Accuracy and pass@k over problems, each given as its samples' correctness (bools, or scores
    where >= 0.5 counts as right). Accuracy is the mean over problems of the fraction right (pass@1
    when every problem has the same n); a k above a problem's sample count is left out with a note."""
    problems = [[float(x) >= 0.5 for x in samples] for samples in correct]
    if not problems or any(not p for p in problems):
        raise ValueError("summarize: every problem needs at least one sample")
    per_problem = [sum(p) / len(p) for p in problems]
    accuracy, stderr = mean_and_stderr(per_problem)
    out: dict[str, float | int] = {
        "problems": len(problems),
        "samples": sum(len(p) for p in problems),
        "accuracy": accuracy,
        "accuracy_stderr": stderr,
    }
    smallest_n = min(len(p) for p in problems)
    for k in ks:
        if k > smallest_n:
            out[f"pass@{k}_skipped"] = smallest_n  # not every problem has k samples
            continue
        values = [pass_at_k(len(p), sum(p), k) for p in problems]
        out[f"pass@{k}"], out[f"pass@{k}_stderr"] = mean_and_stderr(values)
    return out
