"""Step 2 of the clean stage: main text out of HTML, precision first, with a per-document time limit.

Why the time limit needs care: trafilatura has none, and a few pathological pages take seconds or
minutes. ``SIGALRM`` interrupts it cheaply, but only on the main thread, and Ray Data runs class UDFs
(``map_batches(Cls, compute=ActorPoolStrategy(...))``) on a ``ThreadPoolExecutor`` thread of the actor
(checked with Ray 2.60; function UDFs in tasks do run on the main thread). So ``timeout_mode="auto"``
uses the alarm where it can and otherwise a sandbox process (as datatrove does): the document goes to
a forked child through a pipe, and a child that overruns is killed and replaced. The sandbox also
turns a hard crash of the parser (a segfault, the OOM killer) into one rejected document, which is
why the clean stage's own workers (plain actors, whose methods do run on the main thread) use it
under ``auto`` too (pipelines/clean/workers.py); the pipe costs about 1% of a page's extraction.

Settings: ``favor_precision=True`` (FineWeb's), no comments, and trafilatura's fallback extractors
kept (``fast=False``). ``benchmarks/extract_quality.py`` tunes on newspaper4k's article pages and
scores on python-goose's, which no setting was chosen on: there ``fast=True`` was about 1.6x faster
but lost a whole Korean article where the main extractor failed (F1 0.83 against trafilatura's
defaults' 0.98), while these settings scored 0.99, the same as the defaults, at about 1.1x their speed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any, ClassVar

from pipelines.clean.config import ExtractConfig
from pipelines.clean.filters.base import Doc, Step

log = logging.getLogger(__name__)
# trafilatura logs a warning or an error for every page it finds nothing in or cannot parse; the step
# counts those as "empty_extraction" already, so its own messages would only flood the job's log
logging.getLogger("trafilatura").setLevel(logging.CRITICAL)


class ExtractionTimeout(BaseException):
    """Raised when a document overruns; a BaseException so that extractors' ``except Exception`` cannot
    swallow it mid-way."""


class ExtractionCrashed(RuntimeError):
    """The sandbox process died while extracting (segfault, OOM kill)."""


def extract_text(html: str, cfg: ExtractConfig) -> str:
    """The main text of one page with the configured engine; '' when there is none."""
    if cfg.engine == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        # preserve_formatting keeps block-level line breaks, which the line-based quality filters need
        return extract_plain_text(
            html,
            main_content=True,
            preserve_formatting=True,
            alt_texts=False,
            comments=cfg.include_comments,
        )
    import trafilatura

    text = trafilatura.extract(
        html,
        favor_precision=cfg.favor_precision,
        fast=cfg.fast,
        include_tables=cfg.include_tables,
        include_comments=cfg.include_comments,
        deduplicate=cfg.deduplicate,
        output_format="txt",
    )
    return text or ""


# ---- the alarm (main thread) ---------------------------------------------------------------------


def _on_alarm(signum: int, frame: Any) -> None:
    raise ExtractionTimeout


def can_use_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def run_with_alarm(fn: Any, timeout_s: float) -> Any:
    """``fn()`` interrupted by ExtractionTimeout after ``timeout_s``; restores any outer timer (pytest-timeout)."""
    outer_left, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    old_handler = signal.signal(signal.SIGALRM, _on_alarm)
    start = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, old_handler)
        if outer_left > 0:
            left = outer_left - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), outer_interval)


# ---- the sandbox (any thread) --------------------------------------------------------------------


def _sandbox_main(conn: Any, parent_end: Any, cfg_json: str) -> None:
    """The child: extract what arrives until the pipe closes (the parent finished or died).

    Pages arrive as UTF-8 bytes (``surrogatepass``, so any str makes the trip unchanged), not pickled:
    pickling a page of ~190 KB cost the parent about 4x what encoding it does.
    """
    parent_end.close()  # this copy of the parent's end would keep the pipe open: no EOF when it closes
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:  # if memory runs out, kill this child first
            fh.write("1000\n")
    except OSError:
        pass
    cfg = ExtractConfig.model_validate_json(cfg_json)
    while True:
        try:
            html = conn.recv_bytes().decode("utf-8", "surrogatepass")
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", extract_text(html, cfg)))
        except Exception as e:  # noqa: BLE001 - reported to the parent as this document's error
            conn.send(("error", f"{type(e).__name__}: {e}"))


class ExtractionSandbox:
    """One long-lived child process that extracts; killed and replaced when a document overruns."""

    def __init__(self, cfg: ExtractConfig) -> None:
        self.cfg = cfg
        self.process: Any = None
        self.conn: Any = None
        self.restarts = 0

    def _start(self) -> None:
        # fork: the child starts in milliseconds with the extractor already imported (datatrove does
        # the same inside Ray workers); spawn where fork does not exist
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        parent, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_sandbox_main, args=(child, parent, self.cfg.model_dump_json()), daemon=True
        )
        self.process.start()
        child.close()
        self.conn = parent

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            self.conn.close()
        except OSError:
            pass
        self.process.join(timeout=0.2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.process = self.conn = None

    def _kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join(timeout=5)
            self.conn.close()
        self.process = self.conn = None
        self.restarts += 1

    def extract(self, html: str, timeout_s: float) -> str:
        if self.process is None or not self.process.is_alive():
            self._start()
        try:
            self.conn.send_bytes(html.encode("utf-8", "surrogatepass"))
            deadline = time.monotonic() + timeout_s
            while True:
                if self.conn.poll(max(0.0, min(0.5, deadline - time.monotonic()))):
                    status, value = self.conn.recv()
                    break
                if not self.process.is_alive():
                    raise ExtractionCrashed(f"the extractor process died (exit code {self.process.exitcode})")
                if time.monotonic() >= deadline:
                    raise ExtractionTimeout
        except (ExtractionTimeout, ExtractionCrashed, EOFError, OSError) as e:
            self._kill()
            if isinstance(e, EOFError | OSError):
                raise ExtractionCrashed(f"the extractor process died: {type(e).__name__}: {e}") from e
            raise
        if status == "error":
            raise RuntimeError(value)
        return value

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


# ---- the step ------------------------------------------------------------------------------------


class HtmlExtractor(Step):
    """HTML documents get ``text`` (main content) and lose their HTML; text documents pass through.

    Drops: ``empty_extraction`` (nothing left: navigation-only pages, broken HTML), ``extraction_timeout``
    (over ``timeout_s``), ``extraction_error`` (the extractor raised or its process died). Each rejects
    only its own document.
    """

    name: ClassVar[str] = "extract"

    def __init__(self, cfg: ExtractConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ExtractConfig()
        self._sandbox: ExtractionSandbox | None = None
        self._pid = os.getpid()

    def _extract_limited(self, html: str) -> str:
        mode = self.cfg.timeout_mode
        if mode == "auto":
            mode = "signal" if can_use_alarm() else "process"
        if mode == "none":
            return extract_text(html, self.cfg)
        if mode == "signal":
            if not can_use_alarm():
                raise RuntimeError("timeout_mode='signal' needs the main thread; use 'auto' or 'process'")
            return run_with_alarm(lambda: extract_text(html, self.cfg), self.cfg.timeout_s)
        if self._sandbox is None or self._pid != os.getpid():  # a pickled copy in a new process
            self._sandbox, self._pid = ExtractionSandbox(self.cfg), os.getpid()
        return self._sandbox.extract(html, self.cfg.timeout_s)

    def decide(self, doc: Doc) -> str | None:
        content = doc.pop("content", None)
        if content is None and isinstance(doc.get("text"), str):
            return None  # already text (e.g. a pipeline that maps content -> text itself)
        if doc.get("content_type") == "text":
            doc["text"] = content if isinstance(content, str) else ""
            return None
        if isinstance(content, bytes):
            from pipelines.decode import decode_text

            content = decode_text(content)[0]
        if not isinstance(content, str):
            return self.drop("extraction_error", f"no HTML string in 'content' ({type(content).__name__})")
        self.counts["html_chars"] += len(content)
        start = time.monotonic()
        try:
            text = self._extract_limited(content)
        except ExtractionTimeout:
            doc["content"] = content  # a rejected page keeps its HTML (bounded) to be looked at
            return self.drop(
                "extraction_timeout", f"over {self.cfg.timeout_s:g} s ({len(content)} chars of HTML)"
            )
        except Exception as e:  # noqa: BLE001 - any extractor failure rejects this document only
            doc["content"] = content
            return self.drop("extraction_error", f"{type(e).__name__}: {e}"[:500])
        finally:
            self.counts["extract_ms"] += round((time.monotonic() - start) * 1000)
        text = text.strip()
        if not text:
            doc["content"] = content
            return self.drop("empty_extraction")
        self.counts["text_chars"] += len(text)
        doc["text"] = text
        return None

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.stop()
            self._sandbox = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sandbox"] = None  # a process does not travel; the copy starts its own when needed
        return state
