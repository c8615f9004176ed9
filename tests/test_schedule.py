"""When `corrbot run` polls Yahoo (NYSE hours plus one run after each close, half days
included), and the daily digest as it is queued."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from botapi_server import demo_config

from bot.format import strip_html
from service.digest import queue_digest
from service.runner import equities_due
from storage.db import open_db


def at(text: str) -> float:
    return pd.Timestamp(text, tz="UTC").timestamp()


@pytest.mark.parametrize(
    "when, due",
    [
        ("2025-07-14 15:00", True),  # Monday 11:00 New York: open
        ("2025-07-14 13:29", False),  # before the 09:30 open
        ("2025-07-14 20:10", False),  # closed at 20:00 UTC, the after-close run is at 20:20
        ("2025-07-14 20:25", True),  # in the 15-minute slot after close + 20 min
        ("2025-07-14 20:36", False),  # that slot has passed
        ("2025-11-28 18:25", True),  # day after Thanksgiving: half day, closed 13:00 ET (18:00 UTC)
        ("2025-11-28 19:00", False),
        ("2025-07-12 16:00", False),  # Saturday
        ("2025-07-04 16:00", False),  # Independence Day
    ],
)
def test_equities_due_follows_the_nyse_calendar(when: str, due: bool) -> None:
    assert equities_due(at(when), demo_config()) is due


def test_digest_is_one_silent_message_per_chat(tmp_path: Path) -> None:
    base = demo_config()
    path = tmp_path / "d.db"
    src = sqlite3.connect(base.storage.path)
    with sqlite3.connect(path) as dst:
        src.backup(dst)
    src.close()
    cfg = base.model_copy(update={"storage": base.storage.model_copy(update={"path": path})})
    db = open_db(path)
    assert queue_digest(db, cfg, ["team", "desk"]) == 2
    rows = db.execute("SELECT chat, kind, silent, text FROM outbox ORDER BY id").fetchall()
    assert [(c, k, s) for c, k, s, _ in rows] == [("team", "digest", 1), ("desk", "digest", 1)]
    text = strip_html(rows[0][3])
    assert "corrbot digest · BTC · 1d w90 · as of 2025-08-22" in text
    assert "SMALLCAP_TECH" in text and "1w Δ" in text and "No alert is firing." in text
