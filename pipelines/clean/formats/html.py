"""A file that is one HTML page (``.html``, ``.htm``, gzipped or not): one document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipelines import storage
from pipelines.clean.config import ReadConfig
from pipelines.clean.documents import broken, error_row, html_document, stable_id
from pipelines.decode import BreakGuard, open_decompressed
from pipelines.inputs import InputFile


def read_html(f: InputFile, compression: str | None, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    where = {"id": stable_id(f.path, 0)}
    with storage.open_input(f.path) as raw, open_decompressed(raw, compression) as decompressed:
        stream = BreakGuard(decompressed)
        data = stream.read(cfg.max_document_bytes + 1)
    if stream.error is not None:
        yield broken(f, 0, stream.error)
        return
    if len(data) > cfg.max_document_bytes:
        yield error_row(
            f.path, 0, "document_too_large", f"more than max_document_bytes={cfg.max_document_bytes}", **where
        )
        return
    yield html_document(data, None, id=where["id"], file_path=f.path, source_format="html", record_index=0)
