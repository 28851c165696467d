"""Watch mode: complete files only, each imported once, moved to done/ or failed/, safe across restarts."""
from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from mediation import watch as watch_module
from mediation.watch import WatchedFile, watch
from tests.mediation import test_importer
from tests.mediation.test_importer import (
    CATALOG,
    NOW,
    PROFILES,
    asterisk_line,
    run_import,
    run_o2c,
    subscriber,
    uid,
    usage_of,
    voice_minutes_used,
    write,
)


o2c_env = test_importer.o2c_env  # the fixture: `o2c` commands against the test database


def run_watch(db_url: str, folder: Path, **options) -> list[WatchedFile]:
    options.setdefault("settle_s", 0)
    return watch(db_url, folder, catalog=CATALOG, profiles=PROFILES, once=True, **options)


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def test_complete_files_are_imported_and_moved_to_done_or_failed(db_url, tmp_path):
    sub = subscriber(db_url)
    good = write(tmp_path, "Master.csv", [asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=1), 60)])
    write(tmp_path, "junk.csv", [f"nothing,to,see,{uid()}"])
    ignored = ["half-written.csv.part", "half-written.csv.tmp", ".hidden.csv"]
    for name in ignored:
        write(tmp_path, name, [asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=1), 60)])
    os.utime(good, (1, 1))  # oldest first: Master.csv before junk.csv

    handled = run_watch(db_url, tmp_path)

    assert [(item.name, item.report.status) for item in handled] == [("Master.csv", "done"), ("junk.csv", "failed")]
    assert listing(tmp_path) == sorted([*ignored, "done/Master.csv", "failed/junk.csv", "failed/junk.csv.error.txt"])
    error = (tmp_path / "failed" / "junk.csv.error.txt").read_text()
    assert "cannot tell the CDR format" in error
    assert handled[0].moved_to == tmp_path / "done" / "Master.csv"
    assert len(usage_of(db_url, sub.msisdn)) == 1  # the ignored files were not read
    assert run_watch(db_url, tmp_path) == []  # nothing left to do


def test_a_file_still_being_written_waits_for_the_next_run(db_url, tmp_path):
    sub = subscriber(db_url)
    growing = write(tmp_path, "Master.csv", [asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=2), 60)])

    def the_switch_writes_on(_: float) -> None:
        with growing.open("a") as handle:
            handle.write(asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=1), 60) + "\n")

    assert run_watch(db_url, tmp_path, settle_s=2.0, sleep=the_switch_writes_on) == []
    assert listing(tmp_path) == ["Master.csv"] and usage_of(db_url, sub.msisdn) == {}

    [item] = run_watch(db_url, tmp_path, settle_s=2.0, sleep=lambda _: None)  # unchanged this time
    assert (item.report.status, item.report.accepted) == ("done", 2)


def test_a_restart_moves_an_imported_file_without_importing_it_again(db_url, tmp_path):
    sub = subscriber(db_url)
    lines = [asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=1), 120)]
    path = write(tmp_path, "Master.csv", lines)
    assert run_import(db_url, path).accepted == 1  # imported, then the watcher died before moving it

    [item] = run_watch(db_url, tmp_path)

    assert (item.report.status, item.moved_to) == ("already_imported", tmp_path / "done" / "Master.csv")
    assert len(usage_of(db_url, sub.msisdn)) == 1
    assert voice_minutes_used(db_url, sub.product_id) == 2

    # The switch drops the same bytes again under the same name: imported once, both copies kept.
    write(tmp_path, "Master.csv", lines)
    [again] = run_watch(db_url, tmp_path)
    assert (again.report.status, again.moved_to) == ("already_imported", tmp_path / "done" / "Master~2.csv")
    assert voice_minutes_used(db_url, sub.product_id) == 2


def test_duplicates_across_files_of_two_watch_runs_are_not_charged(db_url, tmp_path):
    sub = subscriber(db_url)
    first, second = (asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=h), 60) for h in (2, 1))
    write(tmp_path, "1.csv", [first])
    run_watch(db_url, tmp_path)
    write(tmp_path, "2.csv", [first, second])

    [item] = run_watch(db_url, tmp_path)

    assert (item.report.accepted, item.report.duplicates) == (1, 1)
    assert voice_minutes_used(db_url, sub.product_id) == 2
    assert listing(tmp_path) == ["done/1.csv", "done/2.csv"]


def test_a_database_problem_leaves_the_file_to_be_tried_again(db_url, tmp_path, monkeypatch):
    sub = subscriber(db_url)
    write(tmp_path, "Master.csv", [asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=1), 60)])

    def database_down(*_, **__):
        raise ConnectionError("database went away")

    monkeypatch.setattr(watch_module, "import_file", database_down)
    [item] = run_watch(db_url, tmp_path)
    assert (item.report, item.moved_to) == (None, None)
    assert listing(tmp_path) == ["Master.csv"]

    monkeypatch.undo()
    [item] = run_watch(db_url, tmp_path)
    assert item.report.status == "done" and listing(tmp_path) == ["done/Master.csv"]


def test_a_running_watch_picks_up_files_as_they_arrive_until_stopped(db_url, tmp_path):
    sub = subscriber(db_url)
    seen: list[WatchedFile] = []
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(db_url, tmp_path), daemon=True,
                               kwargs={"catalog": CATALOG, "profiles": PROFILES, "poll_s": 0.02, "settle_s": 0.1,
                                       "stop": stop, "on_file": seen.append, "source": "ast-fra1"})
    watcher.start()
    try:
        # The careful way to drop a file: write it under a temporary name, then rename it.
        part = write(tmp_path, "Master.csv.part", [asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=1), 60)])
        time.sleep(0.3)
        assert seen == []  # a .part file is never read
        part.rename(tmp_path / "Master.csv")
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        watcher.join(timeout=20)
    assert not watcher.is_alive()
    assert [(item.name, item.report.status, item.report.accepted) for item in seen] == [("Master.csv", "done", 1)]
    assert listing(tmp_path) == ["done/Master.csv"]
    assert [record_id.split(":")[0] for record_id in usage_of(db_url, sub.msisdn)] == ["ast-fra1"]


def test_the_watch_directory_must_exist(db_url, tmp_path):
    with pytest.raises(NotADirectoryError):
        run_watch(db_url, tmp_path / "absent")


def test_mediate_command_once(o2c_env, db_url, tmp_path, capsys):
    sub = subscriber(db_url)
    write(tmp_path, "Master.csv", [asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=1), 60)])

    assert run_o2c("mediate", "--watch", str(tmp_path), "--once", "--settle", "0") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("Master.csv: asterisk, 1 lines: 1 accepted")
    assert listing(tmp_path) == ["done/Master.csv"]

    write(tmp_path, "junk.csv", [f"junk {uid()}"])
    assert run_o2c("mediate", "--watch", str(tmp_path), "--once", "--settle", "0") == 1
    assert listing(tmp_path) == ["done/Master.csv", "failed/junk.csv", "failed/junk.csv.error.txt"]
