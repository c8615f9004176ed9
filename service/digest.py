"""The optional daily digest (`schedule.digest_time`): one message per chat with the default
crypto asset's ranking and 1-week changes, and what is firing. Queued in the outbox like
any push, so it survives outages the same way."""

from __future__ import annotations

import sqlite_utils

from bot.alert_text import digest_text
from core.config import Config
from service import alert_queries, queries
from storage.db import transaction
from storage.outbox import enqueue


def queue_digest(db: sqlite_utils.Database, cfg: Config, chats: list[str]) -> int:
    """Queue today's digest for every chat; returns how many rows."""
    crypto = cfg.default_crypto
    ranking = queries.rank(db, cfg, crypto)
    changes = {
        b: queries.corr_readings(db, cfg, crypto, b, window=ranking.window, timeframe=ranking.timeframe)[0].change_1w
        for b in cfg.counterparts(crypto)
    }
    firing = alert_queries.alerts(db, cfg, 0).firing
    text = digest_text(ranking, changes, firing)
    with transaction(db):
        for chat in chats:
            enqueue(db, chat, "digest", text, silent=True)
    return len(chats)
