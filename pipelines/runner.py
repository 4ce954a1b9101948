"""Running stages: one alone, or several in graph order, skipping those whose outputs are complete.

What every stage gets from here, so no stage (and no CLI command) repeats it: the run directory is
checked writable and the stage's own ``preflight`` runs before Ray starts; the stage's done marker is
removed while it runs and written when it ends (long-running stages have none); its numbers go to
``metrics/summary.json``; the stages built on it lose their done markers, since their inputs changed;
and report.md is written again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines import console, storage
from pipelines.errors import ConfigError
from pipelines.run_dir import RunDir, clear_done, is_done, mark_done, update_summary
from pipelines.runtime import init_ray
from pipelines.stages import Graph

log = logging.getLogger("raychat")


def preflight(graph: Graph, name: str) -> None:
    """What a stage can check before any work and before Ray starts: a ``ConfigError`` if not fine.

    Every stage writes into the run directory, so that is checked for all of them (a path under a
    regular file, a read-only mount, an object store that refuses the credentials); a stage module
    may add its own checks as ``preflight(cfg, name)`` (clean: its inputs and step settings).
    """
    cfg = graph.cfg
    try:
        storage.check_writable(RunDir(cfg.run_dir).at("metrics"))
        for folder in _output_folders(graph, name):
            storage.check_writable(folder)
    except OSError as e:
        raise ConfigError(f"stage {name}: cannot write the run directory {cfg.run_dir}: {e}") from None
    module = graph[name].module()
    if hasattr(module, "preflight"):
        module.preflight(cfg, name)


def _output_folders(graph: Graph, name: str) -> list[str]:
    """The existing folders of a local run directory that the stage writes into: for each output
    (and ``checkpoints/<stage>`` of a stage that makes a model), the output folder if it exists and the nearest
    existing folder above it, where it is made and swapped in. Probing those creates nothing; a
    read-only ``checkpoints/`` was a traceback from inside Ray Train."""
    run_dir = str(graph.cfg.run_dir)
    if storage.is_uri(run_dir):
        return []  # clean's object-store outputs: its own preflight probes them
    stage = graph[name]
    settings = stage.settings(graph.cfg)
    outputs = [*stage.produces(settings)]
    if any(o.startswith("models/") for o in outputs):  # a stage that makes a model trains it
        outputs.append(f"checkpoints/{name}")
    fs, _ = storage.fs_and_path(run_dir)
    folders: list[str] = []
    for rel in outputs:
        path = RunDir(run_dir).path(rel)
        for folder in (path, os.path.dirname(path)):
            existing = storage.nearest_existing(fs, folder)
            if existing == path and not os.path.isdir(path):
                continue  # an output file (stats.json): its folder is the next one
            if existing not in folders:  # a file in the way: check_writable says so
                folders.append(existing)
    return folders


@contextlib.contextmanager
def forgotten_if_refused(run: RunDir) -> Iterator[None]:
    """The run directory this command creates is taken away again when the command is refused before
    any work (a ``ConfigError``, e.g. from preflight): a mistyped ``--run-dir`` leaves no empty run
    behind (``raychat sft --run-dir runs/tyni`` made ``runs/tyni/logs`` and ``metrics`` to say that
    ``models/base`` is missing). Only what this command made goes: its log file and folders left
    empty; a file anyone else put there meanwhile (a sweep's other run under the same new parent)
    keeps its folders."""
    made = new_run_folder(run)
    try:
        yield
    except ConfigError:
        forget_new_run(run, made)
        raise


def new_run_folder(run: RunDir) -> Path | None:
    """The outermost folder that creating ``run`` would make (None: it exists, or is on a store)."""
    return None if run.is_remote else _first_missing(Path(run.location).absolute())


def forget_new_run(run: RunDir, made: Path | None) -> None:
    """Take away what a refused command made of a new run directory (``new_run_folder``'s answer)."""
    if made is not None and made.is_dir():
        console.stop_log_to()
        with contextlib.suppress(OSError):
            run.log_file.unlink(missing_ok=True)
        _remove_empty_folders(made)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what creating it would make), or None."""
    if path.exists() or path.is_symlink():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def _remove_empty_folders(top: Path) -> None:
    """``top`` and the folders under it that hold nothing (deepest first); nothing else is touched."""
    for folder, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):  # not empty (or gone): left as it is
            os.rmdir(folder)


def run_stage(graph: Graph, name: str, force: bool = False, report: bool = True) -> dict[str, Any]:
    """Run one stage in this process (Ray already initialised) and record it (see the module docstring).

    ``force`` also drops the stage's resumable state (a stage module's ``start_over(cfg, name)``, e.g.
    pretraining's checkpoints), so the stage is really redone rather than resumed at its end.
    """
    stage, cfg = graph[name], graph.cfg
    run = RunDir(cfg.run_dir)
    module = stage.module()
    started = time.time()
    if not stage.long_running:
        clear_done(run, name)
    if force and hasattr(module, "start_over"):
        module.start_over(cfg, name)
    log_to_run(run)
    log.info("stage %s: starting (run dir %s)", name, run.location, extra={"console": True})
    with _watching(run, name):
        numbers = module.run(cfg, name) or {}  # a long-running stage returns when it is stopped
    numbers.setdefault("seconds", round(time.time() - started, 2))
    # the stages built on this one were made from its old outputs: they are no longer complete (a stage
    # that fails leaves them be, as stages swap their outputs in only when they finish)
    redo = [later for later in graph.built_on(name) if is_done(run, later)]
    for later in redo:
        clear_done(run, later)
    if redo:  # on the console: a user who reran one stage should not find the others undone later
        log.info(
            "stage %s: no longer complete, being built on its old outputs: %s (raychat run redoes them)",
            name, ", ".join(redo), extra={"console": True},
        )  # fmt: skip
    update_summary(run, name, numbers)
    if not stage.long_running:
        mark_done(run, name, {"seconds": numbers["seconds"], "consumes": graph.consumes(name)})
    summary = console.headline(numbers, getattr(module, "HEADLINE", ()))
    log.info(
        "stage %s: done in %.1fs%s", name, numbers["seconds"], f": {summary}" if summary else "",
        extra={"console": True},
    )  # fmt: skip
    if report:
        write_report_safely(graph)
    return numbers


def run_stages(graph: Graph, names: list[str], force: bool = False) -> dict[str, Any]:
    """``names`` in graph order; each is checked (``preflight``) just before it runs: before Ray starts
    for the first one, and after the earlier stages made what a later one reads. A long-running stage
    among them runs last (it returns only when stopped). report.md is written at the end, also when a
    stage failed (with what the others did), unless no stage has run or is complete."""
    run = RunDir(graph.cfg.run_dir)
    made = new_run_folder(run)
    log_to_run(run)
    ordered = graph.order(names)
    ordered = [n for n in ordered if not graph[n].long_running] + [
        n for n in ordered if graph[n].long_running
    ]
    results: dict[str, Any] = {}
    try:
        for name in ordered:
            if not force and not graph[name].long_running and is_done(run, name):
                log.info(
                    "stage %s: outputs complete, skipping (use --force to redo)",
                    name,
                    extra={"console": True},
                )
                continue
            for needed in graph.consumes(name):
                if needed not in ordered and not is_done(run, needed):
                    log.warning(
                        "stage %s: it consumes %s, which is not complete in %s", name, needed, run.location
                    )
            try:
                preflight(graph, name)
            except ConfigError:
                if not results:  # refused before anything ran: a mistyped run dir is not left behind
                    forget_new_run(run, made)
                raise
            init_ray(graph.cfg.ray)
            results[name] = run_stage(graph, name, force=force, report=False)
    finally:
        if results or any(is_done(run, n) for n in ordered):
            write_report_safely(graph)
    return results


def _watching(run: RunDir, name: str) -> contextlib.AbstractContextManager[None]:
    """The stage's workers' progress line on the console (a local run directory; a URI run's stage
    is the clean stage, whose progress lines come from its driver)."""
    try:
        return console.watch_status(run.status_file(name), name)
    except ConfigError:
        return contextlib.nullcontext()


def log_to_run(run: RunDir) -> None:
    """Everything logged from now on also goes to ``<run>/logs/raychat.log`` (a local run directory;
    on an object store the console and Ray's session logs are what there is)."""
    try:
        console.log_to(run.log_file)
    except (ConfigError, OSError):  # a URI, or a run directory that preflight will report unwritable
        return


def write_report_safely(graph: Graph) -> None:
    """report.md, or a warning: a report that cannot be drawn must not fail the stage that just ran."""
    from pipelines.report import write_report

    try:
        write_report(graph)
    except Exception as e:  # noqa: BLE001 - the stage's outputs are what matters; say what went wrong
        log.warning("report.md was not written: %s: %s", type(e).__name__, e)
