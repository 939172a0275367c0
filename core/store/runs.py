"""The run store: SQLite (WAL) for runs, configs, metrics and events; one artifact folder per run.

Safe for several threads and processes at once: one connection per thread (and per process),
``BEGIN IMMEDIATE`` write transactions and a busy timeout, so writers queue instead of failing with
"database is locked". Files in a run folder are written atomically (``core.store.files``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from core.config import TrainConfig
from core.errors import UserError
from core.store.files import atomic_write_json, json_default

ACTIVE_STATUSES = ("queued", "running", "stopping")
FINAL_STATUSES = ("finished", "stopped", "failed", "interrupted")
DB_NAME = "runs.sqlite"
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL,
    message     TEXT,
    config      TEXT NOT NULL,
    created     REAL NOT NULL,
    started     REAL,
    finished    REAL,
    result      TEXT,
    grp         TEXT NOT NULL DEFAULT '',
    pinned      INTEGER NOT NULL DEFAULT 0,
    owner_pid   INTEGER,
    owner_token TEXT,
    owner_host  TEXT
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id  TEXT NOT NULL,
    epoch   INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS batches (
    run_id  TEXT NOT NULL,
    epoch   INTEGER NOT NULL,
    batch   INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch, batch)
);
CREATE TABLE IF NOT EXISTS events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    time   REAL NOT NULL,
    kind   TEXT NOT NULL,
    text   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_run ON events (run_id, id);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
"""

T = TypeVar("T")


# ---------------------------------------------------------------- home and ids


def default_home() -> Path:
    """``$CNNLAB_HOME`` if set, else ``~/.cnnlab``."""
    env = os.environ.get("CNNLAB_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cnnlab"


def new_run_id(now: float | None = None) -> str:
    """A sortable, readable id such as ``20261123-235959-ab12`` (local time + 4 random hex digits)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(2)}"


# ---------------------------------------------------------------- process identity


def process_start_token(pid: int) -> str:
    """A token that differs between two processes that reused the same pid ("" if unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 22 (starttime) counts from after the ")" closing the command name, which may hold spaces.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else ""


def process_alive(pid: int | None, token: str | None) -> bool:
    """Whether the process that wrote ``(pid, token)`` is still running (zombies count as dead)."""
    if not pid:
        return False
    if pid == os.getpid():
        return not token or token == _MY_TOKEN
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): the pid exists, trust it
    if stat[stat.rfind(")") + 2 :].split()[:1] == ["Z"]:
        return False
    return not token or process_start_token(pid) == token


_MY_TOKEN = process_start_token(os.getpid())
_HOST = socket.gethostname()


# ---------------------------------------------------------------- records


@dataclass
class RunRecord:
    """One row of the runs table, with its JSON columns decoded."""

    run_id: str
    name: str
    status: str
    message: str | None
    config: TrainConfig
    created: float
    started: float | None = None
    finished: float | None = None
    result: dict[str, Any] | None = None
    group: str = ""
    pinned: bool = False
    owner_pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (timestamps are Unix seconds)."""
        return {
            "run_id": self.run_id,
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "config": self.config.to_dict(),
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "result": self.result,
            "group": self.group,
            "pinned": self.pinned,
        }


# ---------------------------------------------------------------- errors


def _sqlite_sentence(err: sqlite3.Error, db_path: Path) -> str | None:
    """A plain sentence for SQLite failures a user can fix, or None for bugs."""
    text = str(err).lower()
    if "not a database" in text or "malformed" in text or "file is encrypted" in text:
        return (
            f"The run database {db_path} is damaged ({err}): move it away and CNN Lab will start a new, empty one."
        )
    if "disk is full" in text or "disk i/o error" in text:
        return f"Could not write to the run database {db_path}: the disk is full or failing; free some space."
    if "readonly" in text or "unable to open" in text or "read-only" in text:
        return f"Cannot write to the run database {db_path}: the folder is read-only or missing; choose another home folder."
    if "locked" in text or "busy" in text:
        return f"The run database {db_path} stayed busy for too long; try again in a moment."
    return None


def _plain_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Turn user-fixable SQLite and file-system failures into ``UserError`` sentences."""

    @functools.wraps(method)
    def wrapper(self: RunStore, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as err:
            sentence = _sqlite_sentence(err, self.db_path)
            if sentence is None:
                raise
            raise UserError(sentence) from err

    return wrapper


# ---------------------------------------------------------------- the store


class RunStore:
    """Runs, their metrics and events in SQLite; their artifacts in ``<home>/runs/<run_id>/``."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home).expanduser() if home else default_home()
        self.runs_root = self.home / "runs"
        self.db_path = self.home / DB_NAME
        try:
            self.runs_root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(
                f"Cannot create CNN Lab's home folder {self.home} ({err.strerror}): choose another with --home or CNNLAB_HOME."
            ) from err
        self._local = threading.local()
        self._init_lock = threading.Lock()
        self._init_schema()

    # ------------------------------------------------------------ connections

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork: SQLite connections must not cross processes)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error:
            conn.close()
            raise
        conn.row_factory = sqlite3.Row
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front (no deadlock on lock upgrade)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @_plain_errors
    def _init_schema(self) -> None:
        with self._init_lock, self._write() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    def close(self) -> None:
        """Close this thread's connection (other threads' close when they end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------ runs

    @_plain_errors
    def create_run(self, config: TrainConfig, name: str = "") -> str:
        """Insert a new ``queued`` run owned by this process and create its folder."""
        now = time.time()
        for _ in range(20):
            run_id = new_run_id(now)
            try:
                with self._write() as conn:
                    conn.execute(
                        "INSERT INTO runs (run_id, name, status, config, created, grp, owner_pid, owner_token, owner_host)"
                        " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                        (run_id, name or config.name, config.to_json(), now, config.group, os.getpid(), _MY_TOKEN,
                         _HOST),
                    )
                break
            except sqlite3.IntegrityError:
                continue
        else:  # pragma: no cover - 20 collisions of 16 random bits in one second
            raise RuntimeError("could not allocate a unique run id")
        folder = self.run_dir(run_id)
        try:
            atomic_write_json(folder / "config.json", config.to_dict())
        except BaseException:  # a full disk: no run without its folder is left behind
            with self._write() as conn:
                conn.execute("DELETE FROM runs WHERE run_id=?", (run_id,))
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return run_id

    @_plain_errors
    def set_status(self, run_id: str, status: str, message: str | None = None) -> None:
        """Change a run's status; ``running`` stamps the start and owner, a final status the finish."""
        if status not in ACTIVE_STATUSES + FINAL_STATUSES:
            raise ValueError(f"unknown status {status!r}")
        now = time.time()
        with self._write() as conn:
            if status == "running":
                conn.execute(
                    "UPDATE runs SET status=?, message=?, started=COALESCE(started, ?),"
                    " owner_pid=?, owner_token=?, owner_host=? WHERE run_id=?",
                    (status, message, now, os.getpid(), _MY_TOKEN, _HOST, run_id),
                )
            elif status in FINAL_STATUSES:
                conn.execute(
                    "UPDATE runs SET status=?, message=?, finished=? WHERE run_id=?", (status, message, now, run_id)
                )
            else:
                conn.execute("UPDATE runs SET status=?, message=? WHERE run_id=?", (status, message, run_id))

    @_plain_errors
    def set_result(self, run_id: str, result: dict[str, Any]) -> None:
        """Store the final metrics of a run (JSON)."""
        with self._write() as conn:
            conn.execute("UPDATE runs SET result=? WHERE run_id=?", (_dumps(result), run_id))

    @_plain_errors
    def rename(self, run_id: str, name: str) -> None:
        """Give a run a new display name."""
        with self._write() as conn:
            conn.execute("UPDATE runs SET name=? WHERE run_id=?", (name, run_id))

    @_plain_errors
    def set_group(self, run_id: str, group: str) -> None:
        """Put a run in a named group (experiments compared together)."""
        with self._write() as conn:
            conn.execute("UPDATE runs SET grp=? WHERE run_id=?", (group, run_id))

    @_plain_errors
    def set_pinned(self, run_id: str, pinned: bool) -> None:
        """Pin a run so disk clean-ups never remove its artifacts."""
        with self._write() as conn:
            conn.execute("UPDATE runs SET pinned=? WHERE run_id=?", (int(pinned), run_id))

    @_plain_errors
    def delete(self, run_id: str) -> None:
        """Remove a run's rows and its folder."""
        with self._write() as conn:
            for table in ("batches", "epochs", "events", "runs"):
                conn.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    @_plain_errors
    def get(self, run_id: str) -> RunRecord | None:
        """The run with this id, or None."""
        row = self._conn().execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return _record(row) if row is not None else None

    @_plain_errors
    def list(self) -> list[RunRecord]:
        """All runs, newest first."""
        rows = self._conn().execute("SELECT * FROM runs ORDER BY created DESC, run_id DESC").fetchall()
        return [_record(r) for r in rows]

    def run_dir(self, run_id: str) -> Path:
        """The artifact folder of a run (not created here)."""
        if not run_id or "/" in run_id or "\\" in run_id or run_id in (".", ".."):
            raise UserError(f"'{run_id}' is not a valid run id.")
        return self.runs_root / run_id

    # ------------------------------------------------------------ metrics and events

    @_plain_errors
    def add_epoch(self, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
        """Record (or replace) the metrics of one completed epoch (1-based)."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO epochs (run_id, epoch, metrics) VALUES (?, ?, ?)",
                (run_id, int(epoch), _dumps(metrics)),
            )

    @_plain_errors
    def add_batch(self, run_id: str, epoch: int, batch: int, metrics: dict[str, float]) -> None:
        """Record the (throttled) metrics of one batch."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO batches (run_id, epoch, batch, metrics) VALUES (?, ?, ?, ?)",
                (run_id, int(epoch), int(batch), _dumps(metrics)),
            )

    @_plain_errors
    def add_event(self, run_id: str, kind: str, text: str) -> None:
        """Append a line to a run's log (kind: info, warning, error, traceback, ...)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO events (run_id, time, kind, text) VALUES (?, ?, ?, ?)", (run_id, time.time(), kind, text)
            )

    @_plain_errors
    def epochs(self, run_id: str) -> list[dict[str, Any]]:
        """``[{"epoch": 1, "loss": ..., ...}, ...]`` in epoch order."""
        rows = self._conn().execute(
            "SELECT epoch, metrics FROM epochs WHERE run_id=? ORDER BY epoch", (run_id,)
        ).fetchall()
        return [{"epoch": r["epoch"], **json.loads(r["metrics"])} for r in rows]

    @_plain_errors
    def batches(self, run_id: str) -> list[dict[str, Any]]:
        """``[{"epoch": 1, "batch": 7, "x": 0.4, "loss": ..., ...}, ...]`` in order."""
        rows = self._conn().execute(
            "SELECT epoch, batch, metrics FROM batches WHERE run_id=? ORDER BY epoch, batch", (run_id,)
        ).fetchall()
        return [{"epoch": r["epoch"], "batch": r["batch"], **json.loads(r["metrics"])} for r in rows]

    @_plain_errors
    def events(self, run_id: str) -> list[dict[str, Any]]:
        """``[{"time": ..., "kind": ..., "text": ...}, ...]`` oldest first."""
        rows = self._conn().execute(
            "SELECT time, kind, text FROM events WHERE run_id=? ORDER BY id", (run_id,)
        ).fetchall()
        return [dict(r) for r in rows]

    # ------------------------------------------------------------ crash recovery

    @_plain_errors
    def mark_interrupted(self) -> list[str]:
        """Mark ``interrupted`` the runs left queued/running/stopping by a process that is gone."""
        placeholders = ",".join("?" * len(ACTIVE_STATUSES))
        marked: list[str] = []
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT run_id, status, owner_pid, owner_token, owner_host FROM runs WHERE status IN ({placeholders})",
                ACTIVE_STATUSES,
            ).fetchall()
            now = time.time()
            for r in rows:
                if r["owner_host"] not in (None, "", _HOST):
                    continue  # another machine shares this home: we cannot see its processes
                if process_alive(r["owner_pid"], r["owner_token"]):
                    continue
                was = "waiting in the queue" if r["status"] == "queued" else "training"
                message = f"The program stopped while this run was {was}; the epochs saved so far are kept."
                conn.execute(
                    "UPDATE runs SET status='interrupted', message=?, finished=? WHERE run_id=?",
                    (message, now, r["run_id"]),
                )
                conn.execute(
                    "INSERT INTO events (run_id, time, kind, text) VALUES (?, ?, 'warning', ?)",
                    (r["run_id"], now, f"Marked interrupted: process {r['owner_pid']} is no longer running."),
                )
                marked.append(r["run_id"])
        return marked

    @_plain_errors
    def reopen(self, run_id: str, keep_epochs: int) -> None:
        """Queue an ended run again under its id (resume): drop epochs and batches after ``keep_epochs``.

        The run becomes ``queued`` and owned by this process, so no other process marks it interrupted;
        its result is cleared until the resumed run writes a new one. Events stay (the run's log).
        """
        with self._write() as conn:
            conn.execute("DELETE FROM epochs WHERE run_id=? AND epoch>?", (run_id, int(keep_epochs)))
            conn.execute("DELETE FROM batches WHERE run_id=? AND epoch>?", (run_id, int(keep_epochs)))
            conn.execute(
                "UPDATE runs SET status='queued', message=NULL, finished=NULL, result=NULL,"
                " owner_pid=?, owner_token=?, owner_host=? WHERE run_id=?",
                (os.getpid(), _MY_TOKEN, _HOST, run_id),
            )

    # ------------------------------------------------------------ disk

    def disk_usage(self, run_id: str) -> int:
        """Bytes used by a run's folder."""
        folder = self.run_dir(run_id)
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0

    def enforce_disk_cap(self, max_bytes: int) -> list[str]:
        """Remove the artifacts of the oldest unpinned finished runs until all run folders fit ``max_bytes``.

        Rows, metrics and events stay (curves still show); each cleaned run gets a warning event.
        """
        runs = self.list()
        usage = {r.run_id: self.disk_usage(r.run_id) for r in runs}
        total = sum(usage.values())
        cleaned: list[str] = []
        for r in sorted(runs, key=lambda r: r.created):
            if total <= max_bytes:
                break
            if r.pinned or r.status not in FINAL_STATUSES or usage[r.run_id] == 0:
                continue
            shutil.rmtree(self.run_dir(r.run_id), ignore_errors=True)
            total -= usage[r.run_id]
            self.add_event(r.run_id, "warning", f"Its saved files ({usage[r.run_id] / 1024**2:.1f} MB) were removed "
                           f"to keep the run store under {max_bytes / 1024**2:.0f} MB; pin a run to keep its files.")
            cleaned.append(r.run_id)
        return cleaned


def _dumps(obj: Any) -> str:
    """JSON text for a metrics/result dict; NaN/inf become null so the column stays valid JSON."""
    return json.dumps(_finite(obj), default=json_default, allow_nan=False)


def _finite(obj: Any) -> Any:
    """Replace non-finite floats by None, recursively."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return _finite(obj.tolist())
    return obj


def _record(row: sqlite3.Row) -> RunRecord:
    """Decode one runs row."""
    try:
        config = TrainConfig.from_json(row["config"])
    except (ValueError, TypeError, UserError):
        config = TrainConfig()
    return RunRecord(
        run_id=row["run_id"],
        name=row["name"] or "",
        status=row["status"],
        message=row["message"],
        config=config,
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        result=json.loads(row["result"]) if row["result"] else None,
        group=row["grp"] or "",
        pinned=bool(row["pinned"]),
        owner_pid=row["owner_pid"],
    )
