"""Watch mode: import CDR files as switches drop them into a directory, each exactly once.

- Only complete files are read: a file is complete when its size and mtime have not changed for
  `settle_s` seconds. Dotfiles and names ending in .tmp or .part are never read: that is how a
  careful writer marks a file it has not finished (write `x.csv.part`, then rename to `x.csv`).
- Each file goes through mediation.importer.import_file, then moves to DIR/done/ (imported, or
  imported before) or DIR/failed/ with `<name>.error.txt` beside it (format not detected, bad
  header, unreadable). A name already taken there gets a `~2`, `~3`, ... suffix; nothing is
  overwritten.
- Exactly once across restarts comes from the importer, not from the folders: the file's SHA-256
  is recorded with its last batch, so a file still in DIR after a crash (imported but not yet
  moved, or cut off mid-way) is moved without importing again, or resumed where it stopped.
- A database problem is not the file's fault: the file stays in DIR and is tried again on the
  next poll.
Run one watcher per directory; give each switch its own directory and source name.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain.billing_profile import BillingProfile
from domain.catalog import Catalog
from mediation.importer import FileReport, check_import_options, import_file

log = logging.getLogger(__name__)

DONE_DIR = "done"
FAILED_DIR = "failed"
IGNORED_SUFFIXES = (".tmp", ".part")

Signature = tuple[int, int]  # (size, mtime in ns): unchanged for settle_s means the writer is done


@dataclass
class WatchedFile:
    """What became of one file the watcher picked up: `moved_to` is None when the file stays in
    the directory to be tried again (a database problem) or vanished before it could be moved."""

    name: str
    report: FileReport | None
    moved_to: Path | None


class _Settler:
    """Tells which files have kept the same size and mtime for settle_s seconds."""

    def __init__(self, settle_s: float, clock: Callable[[], float]) -> None:
        self._settle_s = settle_s
        self._clock = clock
        self._seen: dict[str, tuple[Signature, float]] = {}  # name -> (signature, unchanged since)

    def ready(self, files: dict[str, Signature]) -> list[str]:
        """The complete files among `files` (all files now in the directory), oldest first."""
        now = self._clock()
        previous = self._seen
        self._seen = {name: previous[name] if name in previous and previous[name][0] == signature else (signature, now)
                      for name, signature in files.items()}
        settled = [name for name, (_, since) in self._seen.items() if now - since >= self._settle_s]
        # Oldest first, so usage is rated roughly in the order the switch wrote it.
        return sorted(settled, key=lambda name: (files[name][1], name))


def candidates(directory: Path) -> dict[str, Signature]:
    """The files in `directory` that may be CDR files, with their signatures."""
    found: dict[str, Signature] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(".") or entry.name.endswith(IGNORED_SUFFIXES):
                continue
            try:
                if not entry.is_file():
                    continue  # done/, failed/ and any other directory
                stat = entry.stat()
            except FileNotFoundError:
                continue  # gone between listing and looking
            found[entry.name] = (stat.st_size, stat.st_mtime_ns)
    return found


def watch(db_url: str, directory: str | os.PathLike[str], *, catalog: Catalog, profiles: dict[str, BillingProfile],
          poll_s: float = 1.0, settle_s: float = 2.0, once: bool = False, stop: threading.Event | None = None,
          on_file: Callable[[WatchedFile], None] | None = None, sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic, **import_options: Any) -> list[WatchedFile]:
    """Import the files dropped into `directory` until `stop` is set, or with once=True the files
    that are complete now (it looks twice, settle_s apart) and return. `on_file` hears about each
    file as it is handled. `import_options` go to import_file (fmt, source, timezone, country_code,
    batch_size, max_age_days) and are checked before anything is read.
    Returns what it did with each file, in order, for once=True; a long-running watch keeps no
    list (it would only grow) and returns an empty one."""
    check_import_options(**import_options)
    folder = Path(directory)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a directory")
    for name in (DONE_DIR, FAILED_DIR):
        (folder / name).mkdir(exist_ok=True)
    settler = _Settler(settle_s, clock)
    handled: list[WatchedFile] = []
    while True:
        ready = _settled_now(folder, settle_s, sleep) if once else settler.ready(candidates(folder))
        for name in ready:
            if stop is not None and stop.is_set():
                break
            outcome = _handle(db_url, folder, name, catalog, profiles, import_options)
            if on_file is not None:
                on_file(outcome)
            if once:
                handled.append(outcome)
        if once or (stop is not None and stop.is_set()):
            return handled
        if stop is not None:
            stop.wait(poll_s)
        else:
            sleep(poll_s)


def _settled_now(folder: Path, settle_s: float, sleep: Callable[[float], None]) -> list[str]:
    """For once=True: the files that look the same twice, settle_s apart. A file still being
    written changes meanwhile and is left for the next run."""
    before = candidates(folder)
    if settle_s > 0:
        sleep(settle_s)
    after = candidates(folder)
    return sorted((name for name, signature in after.items() if before.get(name) == signature), key=lambda name: (after[name][1], name))


def _handle(db_url: str, folder: Path, name: str, catalog: Catalog, profiles: dict[str, BillingProfile],
            import_options: dict[str, Any]) -> WatchedFile:
    path = folder / name
    try:
        report = import_file(db_url, path, catalog=catalog, profiles=profiles, **import_options)
    except Exception:  # the database, not the file: leave it and try again on the next poll
        log.exception("importing %s failed; it stays in %s and will be tried again", name, folder)
        return WatchedFile(name, None, None)
    if not path.exists():  # removed by someone else while it was read
        log.warning("%s vanished before it could be moved", name)
        return WatchedFile(name, report, None)
    if report.status == "failed":
        target = _free_name(folder / FAILED_DIR, name)
        # Written before the move: a crash in between leaves the file in DIR, to fail again, rather
        # than a failed file without its reason.
        _error_file(target).write_text(f"{report.error}\n", encoding="utf-8")
    else:
        target = _free_name(folder / DONE_DIR, name)
    try:
        os.replace(path, target)
    except OSError:
        log.exception("cannot move %s to %s; it stays and will be tried again (it is not imported twice)", name, target.parent)
        return WatchedFile(name, report, None)
    log.info("%s -> %s", name, target)
    return WatchedFile(name, report, target)


def _error_file(target: Path) -> Path:
    return target.with_name(f"{target.name}.error.txt")


def _free_name(folder: Path, name: str) -> Path:
    """folder/name, or folder/stem~N.suffix when that is taken (switches reuse names like Master.csv)."""
    target = folder / name
    number = 1
    while target.exists() or _error_file(target).exists():
        number += 1
        stem, suffix = os.path.splitext(name)
        target = folder / f"{stem}~{number}{suffix}"
    return target
