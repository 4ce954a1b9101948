"""The terms a run report uses without explaining them, explained once at its end.

A report is read by people who did not write the stages: "s.e.", "bpb", "k3 KL" or "staleness" in a
table help no one who has not met them. ``terms_section`` lists only the terms the report's text
actually uses, so a report of two stages does not carry a glossary of ten.
"""

from __future__ import annotations

import re

# (name shown, pattern that finds the term in a report, what it means)
TERMS: tuple[tuple[str, str, str], ...] = (
    (
        "held-out",
        r"held[- ]out|heldout",
        "questions, problems or pairs no training step saw (split off before training), so a score "
        "on them measures what generalises, not what was memorised",
    ),
    (
        "validation set",
        r"\bvalidation\b|\bval_loss\b|\bval loss\b",
        "a second held-out split used to choose settings, so the held-out scores stay untouched by tuning",
    ),
    (
        "s.e. (standard error)",
        r"\bs\.e\.|stderr|standard error",
        "how much a score would move if measured again on another sample of the same size: for an "
        "accuracy p on n items, sqrt(p(1-p)/n); a difference of two independent scores has the root of "
        "the summed squares. Differences under two standard errors are within noise",
    ),
    (
        "bits per byte (bpb)",
        r"\bbpb\b|bits per byte",
        "the validation loss summed over its tokens, in bits, divided by the bytes of text they hold: "
        "unlike loss per token it does not depend on the tokenizer, so models with different "
        "vocabularies compare",
    ),
    (
        "greedy / sampled",
        r"\bgreedy\b|pass@1",
        "greedy decoding takes the most likely token each step (one answer per question); pass@1 is the "
        "mean accuracy over several sampled answers at a temperature, as DeepSeek-R1 reports",
    ),
    (
        "reasoning first / answer first",
        r"reasoning[ _]first|answer[ _]first",
        "the same arithmetic problems trained with the working before the final number or after it; "
        "the model spends a fixed amount of computation per token, so the answer written first has "
        "had none of the working",
    ),
    (
        "I don't know (IDK) rates",
        r"\bidk\b|false refusal|false idk|refusal_share",
        "the IDK rate is the share of questions about unknown entities answered with an honest "
        "refusal; the false-refusal rate is the share of questions about known entities refused; "
        "the gap is the first minus the second",
    ),
    (
        "probe",
        r"\bprob(e|ed|es|ing)\b",
        "asking the model each question several times and judging the answers against the reference, "
        "to label what it knows (Llama 3's recipe for refusal data)",
    ),
    (
        "control",
        r"\bcontrol\b",
        "the same starting model trained by the previous stage's method for the same CPU time, so a "
        "gain is the new method's and not just more training",
    ),
    (
        "pairwise accuracy",
        r"pairwise",
        "the share of held-out (chosen, rejected) pairs where the reward model scores the chosen "
        "reply higher (a tie counts half); 0.5 is chance",
    ),
    (
        "KL to reference",
        r"\bkl\b",
        "how far the policy has moved from the frozen starting model, estimated per token with the k3 "
        "estimator (exp(r) - r - 1 of the log-ratio r); its coefficient in the loss keeps RL close",
    ),
    (
        "entropy",
        r"\bentropy\b",
        "the mean per-token entropy of the policy's next-token distribution on its own samples: a "
        "collapse toward 0 means the samples of a group stop differing",
    ),
    (
        "clip fraction",
        r"clip[ _]frac",
        "the share of tokens where the clip was active (the importance ratio past 1 - eps_low or "
        "1 + eps_high in the direction the advantage pushes it), so their gradient was cut",
    ),
    (
        "staleness",
        r"stale",
        "how many policy versions behind the learner a sample's generator was; asynchronous GRPO "
        "bounds it and corrects with the generator's own log-probabilities",
    ),
    (
        "idle share",
        r"\bidle\b",
        "the share of wall time a pool (generators or learner) waited for the other",
    ),
    (
        "revises",
        r"\brevis",
        "answers that correct themselves mid-way (configured markers such as 'wait'): the 'aha' curve",
    ),
    (
        "rejection sampling",
        r"rejection|keep[ _]rate",
        "sampling several teacher replies per problem and keeping only those whose final answer is "
        "right and whose format is valid, as DeepSeek-R1 does for its distillation data",
    ),
    (
        "calculator / search calls",
        r"<\|calc_start\||calculator|<\|search_start\|",
        "tool calls the model writes between the tool's start and end tokens; the engine runs them and "
        "injects the result between `<|result_start|>` and `<|result_end|>`, which no loss trains on",
    ),
)


def terms_section(text: str) -> str:
    """A markdown list of the terms ``text`` uses, or '' when it uses none."""
    used = [(name, meaning) for name, pattern, meaning in TERMS if re.search(pattern, text, re.IGNORECASE)]
    if not used:
        return ""
    lines = ["## Terms used above", ""]
    lines += [f"- **{name}**: {meaning}." for name, meaning in used]
    return "\n".join(lines) + "\n"
