"""Alert state, episodes, mutes and rule overrides: the SQL behind the alert layer.

The alert layer reads a rule's state, steps it, and writes state, episodes and outbox rows
in one transaction (the caller holds `storage.db.transaction`); these functions never
commit on their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import sqlite_utils

from core.clock import now_iso
from storage import corr


@dataclass(frozen=True)
class StateRow:
    """One key's stored lifecycle state; None = never (see monitors.lifecycle)."""

    status: str  # ok | pending | firing
    pending: int
    last_ts: int | None
    episode_id: int | None
    notice_ts: int | None
    resolved_ts: int | None


def _oi(v: object) -> int | None:
    return None if v is None else int(str(v))


def load_state(db: sqlite_utils.Database, rule: str) -> dict[str, StateRow]:
    rows = db.execute(
        "SELECT key, status, pending, last_ts, episode_id, last_notice_ts, resolved_ts FROM alert_state WHERE rule = ?",
        [rule],
    ).fetchall()
    return {str(r[0]): StateRow(str(r[1]), int(r[2]), _oi(r[3]), _oi(r[4]), _oi(r[5]), _oi(r[6])) for r in rows}


def save_state(db: sqlite_utils.Database, rule: str, rows: dict[str, StateRow]) -> None:
    db.conn.executemany(
        "INSERT INTO alert_state (rule, key, status, pending, last_ts, episode_id, last_notice_ts, resolved_ts) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rule, key) DO UPDATE SET status = excluded.status, "
        "pending = excluded.pending, last_ts = excluded.last_ts, episode_id = excluded.episode_id, "
        "last_notice_ts = excluded.last_notice_ts, resolved_ts = excluded.resolved_ts",
        [(rule, k, r.status, r.pending, r.last_ts, r.episode_id, r.notice_ts, r.resolved_ts) for k, r in rows.items()],
    )


@dataclass(frozen=True)
class Episode:
    id: int
    rule: str
    kind: str
    key: str
    a: str | None
    b: str | None
    timeframe: str | None
    window: int | None
    severity: str
    fired_ts: int
    fire_value: float | None
    detail: dict[str, float]
    resolved_ts: int | None
    resolve_value: float | None
    withheld: bool


_EP_COLS = ("id, rule, kind, key, a, b, timeframe, window, severity, fired_ts, fire_value, fire_detail, "
            "resolved_ts, resolve_value, withheld")


def _of(v: object) -> float | None:
    return None if v is None else float(str(v))


def _os(v: object) -> str | None:
    return None if v is None else str(v)


def _episode(r: Sequence[object]) -> Episode:
    return Episode(int(str(r[0])), str(r[1]), str(r[2]), str(r[3]), _os(r[4]), _os(r[5]), _os(r[6]), _oi(r[7]),
                   str(r[8]), int(str(r[9])), _of(r[10]), json.loads(str(r[11])) if r[11] else {}, _oi(r[12]),
                   _of(r[13]), bool(r[14]))


def open_episode(
    db: sqlite_utils.Database, *, rule: str, kind: str, key: str, a: str | None, b: str | None,
    timeframe: str | None, window: int | None, severity: str, fired_ts: int, value: float | None,
    detail: dict[str, float], withheld: bool,
) -> int:
    cur = db.conn.execute(
        "INSERT INTO episodes (rule, kind, key, a, b, timeframe, window, severity, fired_ts, fire_value, "
        "fire_detail, withheld) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [rule, kind, key, a, b, timeframe, window, severity, fired_ts, value, json.dumps(detail), int(withheld)],
    )
    return int(cur.lastrowid or 0)


def close_episode(db: sqlite_utils.Database, episode_id: int, resolved_ts: int, value: float | None) -> None:
    db.execute("UPDATE episodes SET resolved_ts = ?, resolve_value = ? WHERE id = ?", [resolved_ts, value, episode_id])


def retire_rules(db: sqlite_utils.Database, keep: Iterable[str], ended_ts: int) -> list[str]:
    """Rules no longer configured (removed or renamed, e.g. by a reload): their open episodes
    end at ``ended_ts`` without a notice and their state goes, so they stop counting as
    firing; a rule added back later starts afresh at the latest bar."""
    kept = set(keep)
    have = {str(r[0]) for r in db.execute(
        "SELECT rule FROM alert_state UNION SELECT rule FROM episodes WHERE resolved_ts IS NULL").fetchall()}
    gone = sorted(have - kept)
    for rule in gone:
        db.execute("UPDATE episodes SET resolved_ts = ? WHERE rule = ? AND resolved_ts IS NULL", [ended_ts, rule])
        db.execute("DELETE FROM alert_state WHERE rule = ?", [rule])
    return gone


def set_withheld(db: sqlite_utils.Database, episode_id: int, withheld: bool) -> None:
    db.execute("UPDATE episodes SET withheld = ? WHERE id = ?", [int(withheld), episode_id])


def get_episode(db: sqlite_utils.Database, episode_id: int) -> Episode | None:
    r = db.execute(f"SELECT {_EP_COLS} FROM episodes WHERE id = ?", [episode_id]).fetchone()
    return None if r is None else _episode(r)


def firing_episodes(db: sqlite_utils.Database) -> list[Episode]:
    rows = db.execute(f"SELECT {_EP_COLS} FROM episodes WHERE resolved_ts IS NULL ORDER BY fired_ts, id").fetchall()
    return [_episode(r) for r in rows]


def recent_episodes(db: sqlite_utils.Database, limit: int) -> list[Episode]:
    rows = db.execute(f"SELECT {_EP_COLS} FROM episodes ORDER BY fired_ts DESC, id DESC LIMIT ?", [limit]).fetchall()
    return [_episode(r) for r in rows]


def rule_counts(db: sqlite_utils.Database) -> dict[str, tuple[int, int]]:
    """rule -> (keys firing now, episodes ever)."""
    rows = db.execute(
        "SELECT rule, sum(resolved_ts IS NULL), count(*) FROM episodes GROUP BY rule"
    ).fetchall()
    return {str(r): (int(f or 0), int(n)) for r, f, n in rows}


def last_evaluated(db: sqlite_utils.Database) -> int | None:
    row = db.execute("SELECT max(last_ts) FROM alert_state").fetchone()
    return None if row is None or row[0] is None else int(row[0])


# ---- mutes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mute:
    id: int
    rule: str | None
    target: str | None  # an asset ("BTC") or a pair ("BTC/IWM")
    until_ts: float
    created_by: str | None

    def matches(self, rule: str, a: str | None, b: str | None) -> bool:
        if self.rule is not None and self.rule.lower() != rule.lower():
            return False
        if self.target is None:
            return True
        if "/" in self.target:
            return self.target == f"{a}/{b}"
        return self.target in (a, b)


def add_mute(db: sqlite_utils.Database, rule: str | None, target: str | None, until_ts: float, by: str | None) -> int:
    cur = db.conn.execute(
        "INSERT INTO mutes (rule, target, until_ts, created_by, created_at) VALUES (?, ?, ?, ?, ?)",
        [rule, target, until_ts, by, now_iso()],
    )
    return int(cur.lastrowid or 0)


def active_mutes(db: sqlite_utils.Database, now: float) -> list[Mute]:
    rows = db.execute(
        "SELECT id, rule, target, until_ts, created_by FROM mutes WHERE lifted = 0 AND until_ts > ? ORDER BY id",
        [now],
    ).fetchall()
    return [Mute(int(i), r, t, float(u), c) for i, r, t, u, c in rows]


def lift_mutes(db: sqlite_utils.Database, ids: Sequence[int] | None) -> int:
    """Lift the given mutes (all active ones when ``ids`` is None); returns how many."""
    if ids is None:
        return db.execute("UPDATE mutes SET lifted = 1 WHERE lifted = 0").rowcount
    return sum(db.execute("UPDATE mutes SET lifted = 1 WHERE id = ? AND lifted = 0", [i]).rowcount for i in ids)


# ---- overrides (/set) ----------------------------------------------------------------


def overrides(db: sqlite_utils.Database) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for rule, key, value in db.execute("SELECT rule, key, value FROM rule_overrides ORDER BY rule, key").fetchall():
        out.setdefault(str(rule), {})[str(key)] = str(value)
    return out


def set_override(db: sqlite_utils.Database, rule: str, key: str, value: str, by: str | None) -> None:
    db.execute(
        "INSERT INTO rule_overrides (rule, key, value, set_by, set_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (rule, key) DO UPDATE SET value = excluded.value, set_by = excluded.set_by, "
        "set_at = excluded.set_at",
        [rule, key, value, by, now_iso()],
    )


def reset_overrides(db: sqlite_utils.Database, rule: str) -> int:
    return db.execute("DELETE FROM rule_overrides WHERE rule = ?", [rule]).rowcount


def series_tail(
    db: sqlite_utils.Database, series_id: int, after_ts: int | None, context: int
) -> tuple[np.ndarray, np.ndarray]:
    """(ts, value) of the rows after ``after_ts`` plus ``context`` rows before: `storage.corr_tails`."""
    return corr.series_tail(db, series_id, after_ts, context)


def series_tails(
    db: sqlite_utils.Database, wanted: Sequence[tuple[int, int | None]], context: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`series_tail` of many (series_id, after_ts) at once: `storage.corr_tails.series_tails`."""
    return corr.series_tails(db, wanted, context)


def fire_outbox_id(db: sqlite_utils.Database, episode_id: int, chat: str) -> int | None:
    """The outbox row that announced ``episode_id`` in ``chat`` (what a resolve replies to)."""
    row = db.execute(
        "SELECT o.id FROM outbox o JOIN outbox_episodes oe ON oe.outbox_id = o.id "
        "WHERE oe.episode_id = ? AND o.chat = ? AND o.kind = 'fire' ORDER BY o.id LIMIT 1",
        [episode_id, chat],
    ).fetchone()
    return None if row is None else int(row[0])


def outbox_counts(db: sqlite_utils.Database) -> tuple[int, int]:
    """(rows waiting to be delivered, rows that failed for good)."""
    row = db.execute("SELECT sum(status = 'pending'), sum(status = 'failed') FROM outbox").fetchone()
    return int(row[0] or 0), int(row[1] or 0)
