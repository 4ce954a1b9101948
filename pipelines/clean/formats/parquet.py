"""Parquet files (FineWeb's own schema, or any with a text or html column), by row-group slices."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipelines import storage
from pipelines.clean.config import ReadConfig
from pipelines.clean.documents import broken, error_row, from_mapping, guarded
from pipelines.inputs import InputFile


def read_parquet(f: InputFile, compression: str | None, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    index = 0
    with storage.open_input_file(f.path) as handle:
        try:
            pf = pq.ParquetFile(handle)
        except Exception as e:  # noqa: BLE001 - not a parquet file after all, or its footer is gone
            yield error_row(
                f.path, None, "corrupt_input", f"not a readable parquet file: {type(e).__name__}: {e}"
            )
            return
        wanted = {
            name.split(".")[0]
            for name in [
                *cfg.text_fields,
                *cfg.html_fields,
                *cfg.id_fields,
                *cfg.url_fields,
                *cfg.date_fields,
            ]
            + [*cfg.dump_fields, "file_path", "language", "language_score", "metadata"]
        }
        columns = [c for c in pf.schema_arrow.names if c in wanted]
        batches = pf.iter_batches(batch_size=cfg.parquet_batch_rows, columns=columns)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - a damaged row group: one row, then stop
                yield broken(f, index, e)
                return
            for row in batch.to_pylist():
                yield guarded(f, index, lambda row=row, i=index: from_mapping(row, f, i, cfg, "parquet"))
                index += 1
