"""Settings of the dedup step, apart from its Ray code so that reading a config never imports Ray."""

from __future__ import annotations

from pydantic import Field

from lm.config_base import StrictModel
from pipelines.clean.minhash import MinHasher, TextNormConfig


class DedupConfig(StrictModel):
    """Settings of the dedup step. The MinHash defaults are FineWeb's (datatrove ``MinhashConfig``)."""

    exact: bool = Field(True, description="drop documents whose normalized text is identical")
    fuzzy: bool = Field(True, description="drop near duplicates found by MinHash LSH")
    ngram_size: int = Field(5, ge=1, description="words per shingle; FineWeb uses 5-grams")
    num_bands: int = Field(14, ge=1, description="LSH bands; FineWeb: 14 buckets")
    rows_per_band: int = Field(
        8,
        ge=1,
        description="hashes per band; FineWeb: 8, so 112 permutations. Candidate probability "
        "1-(1-s^8)^14: 0.92 at Jaccard 0.8, 0.01 at 0.5",
    )
    seed: int = Field(1, ge=0, description="seed of the permutations (datatrove's default is 1)")
    normalization: TextNormConfig = Field(
        default_factory=TextNormConfig, description="text simplification before hashing (datatrove's)"
    )
    num_partitions: int | None = Field(
        None, ge=1, description="hash-shuffle partitions; None = from data size and cluster CPUs"
    )
    partition_bytes: int = Field(
        256 * 1024 * 1024, ge=1024 * 1024, description="target bytes per shuffle partition when automatic"
    )
    signature_batch_size: int = Field(
        1024, ge=1, description="documents per map_batches call that computes signatures"
    )
    max_cc_rounds: int = Field(
        64, ge=1, description="safety bound on connected-component rounds (O(log^2 n) expected)"
    )

    def hasher(self) -> MinHasher:
        return MinHasher(
            ngram_size=self.ngram_size,
            num_bands=self.num_bands,
            rows_per_band=self.rows_per_band,
            seed=self.seed,
            norm=self.normalization,
        )
