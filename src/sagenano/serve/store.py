"""Reports kept by the server: a bounded SQLite file, so a report's link keeps working after a restart."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path

from ..inverse.report import Report


class ReportStore:
    """Keeps the newest `capacity` reports (older ones are dropped) in one SQLite file (":memory:" for none)."""

    def __init__(self, path: str | Path, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError(f"the report store needs room for at least one report, got capacity {capacity}")
        if str(path) != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:  # e.g. a parent that is a file
                raise ValueError(
                    f"cannot make the folder of the report store {str(path)!r} ({error.strerror}: {error.filename}); "
                    "pass another --store"
                ) from None
        self.path = str(path)
        self.capacity = capacity
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.open()

    def open(self) -> None:
        """Opens the file (again, after `close`), creating the table when it is new."""
        if self._db is not None:
            return
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS reports (id TEXT PRIMARY KEY, created REAL NOT NULL, body TEXT NOT NULL)"
            )
            self._db.commit()
            # A file damaged in its data pages still opens and takes writes, but reading it fails later.
            problems = [row[0] for row in self._db.execute("PRAGMA integrity_check(5)")]
        except sqlite3.DatabaseError as error:
            raise ValueError(
                f"the report store {self.path!r} is not a readable SQLite file ({error}); move it away or pass "
                "another --store"
            ) from error
        if problems != ["ok"]:
            self.close()
            raise ValueError(
                f"the report store {self.path!r} is damaged (SQLite's integrity check: {'; '.join(problems)}); "
                "move it away (its reports may be recovered with `sqlite3 FILE .recover`) or pass another --store"
            )

    def add(self, report: Report) -> str:
        """Stores the report; returns its new id. Drops the oldest reports beyond the capacity."""
        report_id = uuid.uuid4().hex[:16]
        with self._lock, self._db:
            self._db.execute("INSERT INTO reports VALUES (?, ?, ?)", (report_id, time.time(), report.to_json(None)))
            self._db.execute(
                "DELETE FROM reports WHERE id NOT IN (SELECT id FROM reports ORDER BY created DESC LIMIT ?)",
                (self.capacity,),
            )
        return report_id

    def get(self, report_id: str) -> Report | None:
        """The report, or None when there is no such id (never stored, or dropped as one of the oldest)."""
        with self._lock:
            row = self._db.execute("SELECT body FROM reports WHERE id = ?", (report_id,)).fetchone()
        return None if row is None else Report.from_json(row[0])

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM reports").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
