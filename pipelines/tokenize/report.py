"""The tokenize stage's section of report.md: the tokenizer, its numbers and document lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines import storage
from pipelines.report import pyplot, save_plot, scalars, table
from pipelines.run_dir import RunDir, read_summary

# tokens-per-document histogram bins (powers of two), summed over batches for the report's plot
HIST_EDGES = np.array([0, *[2**k for k in range(0, 25)], np.iinfo(np.int64).max], dtype=np.int64)


def histogram_file(run: RunDir, name: str) -> Path:
    return run.metrics / f"{name}_histogram.json"


def report_section(run: RunDir, name: str = "tokenize") -> str:
    numbers = read_summary(run).get(name)
    if not numbers:
        return ""
    out = [
        f"Tokenizer `{numbers['tokenizer']}` ({numbers['vocab_size']:,} ids, {numbers['bytes_per_token']} UTF-8 "
        f"bytes per token); shards in `tokens/` as {numbers['dtype']}.",
        "",
        table(scalars(numbers)),
    ]
    histogram = storage.read_json(str(histogram_file(run, name)))
    if histogram and (plot := _lengths(run, name, numbers["tokenizer"], histogram["counts"])):
        out += ["", plot]
    return "\n".join(out)


def _lengths(run: RunDir, name: str, tokenizer: str, counts: list[int]) -> str:
    used = [i for i, c in enumerate(counts) if c]
    if not used:
        return ""
    plt = pyplot()
    labels = [f"<{HIST_EDGES[i + 1]}" for i in range(len(counts))]
    lo, hi = used[0], used[-1] + 1
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(range(hi - lo), counts[lo:hi])
    ax.set_xticks(range(hi - lo), labels[lo:hi], rotation=45, fontsize=7)
    ax.set_xlabel("tokens per document")
    ax.set_ylabel("documents")
    ax.set_title(f"Document lengths ({tokenizer})")
    fig.tight_layout()
    return save_plot(fig, run, name, "document_tokens")
