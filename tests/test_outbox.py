"""The outbox table on a real SQLite file: queuing inside the producer's transaction, per-chat
order with the head gating its chat, and the bookkeeping delivery reports back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from storage import outbox
from storage.db import open_db, transaction


@pytest.fixture
def db(tmp_path: Path) -> sqlite_utils.Database:
    return open_db(tmp_path / "corrbot.db")


def _episode(db: sqlite_utils.Database) -> int:
    cur = db.execute("INSERT INTO episodes (rule, kind, key, severity, fired_ts) VALUES ('r', 'level', 'A/B', "
                     "'warn', 1)")
    return int(cur.lastrowid or 0)


def test_enqueue_commits_and_rolls_back_with_the_callers_transaction(db: sqlite_utils.Database) -> None:
    ep = _episode(db)
    with pytest.raises(RuntimeError), transaction(db):
        db.execute("UPDATE episodes SET resolved_ts = 2 WHERE id = ?", [ep])
        outbox.enqueue(db, -100, "resolve", "resolved", episodes=[ep])
        raise RuntimeError("the alert state change failed")
    assert outbox.backlog(db) == {}
    assert db.execute("SELECT COUNT(*) FROM outbox_episodes").fetchone()[0] == 0
    with transaction(db):
        oid = outbox.enqueue(db, -100, "fire", "<b>fired</b>", episodes=[ep], buttons=[("Mute", "mute:1")],
                             silent=True, now=1_750_000_000)
    row = outbox.get(db, oid)
    assert row is not None and row.buttons == (("Mute", "mute:1"),) and row.silent
    assert row.chat == "-100" and row.status == "pending" and row.created_at.startswith("2025-06-15")
    assert db.execute("SELECT episode_id FROM outbox_episodes WHERE outbox_id = ?", [oid]).fetchall() == [(ep,)]


def test_enqueue_rejects_what_telegram_would_reject_later(db: sqlite_utils.Database) -> None:
    fire = outbox.enqueue(db, 1, "fire", "x")
    with pytest.raises(ValueError, match="kind"):
        outbox.enqueue(db, 1, "shout", "x")
    with pytest.raises(ValueError, match="empty"):
        outbox.enqueue(db, 1, "fire", "  ")
    with pytest.raises(ValueError, match="64 bytes"):
        outbox.enqueue(db, 1, "fire", "x", buttons=[("Mute", "m" * 65)])
    with pytest.raises(ValueError, match="not an outbox row of chat 2"):
        outbox.enqueue(db, 2, "resolve", "x", reply_to=fire)
    with pytest.raises(sqlite3.IntegrityError):  # no such episode: nothing half-written
        outbox.enqueue(db, 1, "fire", "x", episodes=[999])
    assert outbox.backlog(db) == {"1": 1}


def test_a_waiting_head_blocks_its_chat_only(db: sqlite_utils.Database) -> None:
    a1, a2, b1 = (outbox.enqueue(db, c, "fire", t) for c, t in ((1, "a1"), (1, "a2"), (2, "b1")))
    assert [r.id for r in outbox.due(db, 100)] == [a1, a2, b1]
    outbox.mark_retry(db, a1, 200, "500")
    a3 = outbox.enqueue(db, 1, "notice", "a3")  # new and due at once, but behind a1
    assert [r.id for r in outbox.due(db, 150)] == [b1]
    assert outbox.next_due(db) == 0
    outbox.mark_sent(db, b1, 7, 150)
    assert outbox.next_due(db) == 200
    assert [r.id for r in outbox.due(db, 200)] == [a1, a2, a3]
    row = outbox.get(db, a1)
    assert row is not None and row.attempts == 1 and row.error == "500"
    outbox.mark_retry(db, a1, 300, "429", count=False)
    assert outbox.get(db, a1).attempts == 1  # type: ignore[union-attr]
    assert outbox.message_id_of(db, b1) == 7 and outbox.message_id_of(db, a1) is None


def test_failures_are_kept_for_status(db: sqlite_utils.Database) -> None:
    ids = [outbox.enqueue(db, c, "fire", f"m{i}") for i, c in enumerate([1, 1, 2, 3])]
    outbox.mark_failed(db, ids[0], "bad request: can't parse entities")
    assert outbox.fail_chat(db, 1, "forbidden") == 1
    assert outbox.fail_chat(db, 1, "forbidden") == 0
    assert sorted(outbox.backlog(db)) == ["2", "3"]
    assert outbox.backlog(db) == {"2": 1, "3": 1}
    failed = outbox.failed_rows(db, 10)
    assert [(r.id, r.error) for r in failed] == [(ids[1], "forbidden"), (ids[0], "bad request: can't parse entities")]
    outbox.mark_sent(db, ids[0], 5, 0)  # Telegram accepted it after all: it was sent
    assert outbox.message_id_of(db, ids[0]) == 5
