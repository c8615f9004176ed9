"""10,000 generated chat updates through the loopback Bot API into the real Application (issue 8).

Commands from the bot's own command list with hostile arguments, unknown commands, plain text,
edited messages and button presses with real, stale and garbage payloads (tests/chat_fuzz.py),
from allowed users, admins, members of allowed groups and strangers, each in its own chat. All
are queued at once and fetched the way the real bot fetches them (getUpdates, 100 at a time,
handled concurrently), on a copy of the demo database with alert rules and firing alerts.

Asserted for every update: no exception reached the error handler or the log (nothing at
ERROR); Telegram accepted every call (the loopback server rejects HTML it cannot parse, texts
over 4096 and captions over 1024 UTF-16 units, callback answers over 200 characters); each
command got exactly the replies the oracle expects (one, or none for edits, plain text and
other bots' commands), in its own chat and forum topic; every button press was answered once.
The time the 10,000 take is printed (``-s``), not asserted.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from botapi_server import BotHarness, Call, demo_config, load_fixture, parse_html, utf16_len
from chat_fuzz import Gen, World, generate
from test_alerts import DIVERGE, JUMP, LEVEL, ZSCORE, with_rules

from bot.args import SPECS
from core.config import Config, TelegramConfig
from core.rules import CorrJumpRule, CorrLevelRule, CorrZscoreRule, DivergenceRule, StaleRule
from service.backtest import backtest
from service.evaluate import evaluate
from storage import alerts as alert_store
from storage.db import open_db

N = 10_000
SEED = 20261129
STALE = {"name": "feed_stale", "kind": "stale", "after": "2h"}
# Answers that take 0.2-1.5 s each on a busy 2-core box (the others ~15 ms) are drawn 4-10x less often.
SLOW = {"chart": 0.1, "heatmap": 0.1, "history": 0.1, "diverge": 0.25, "backtest": 0.25, "leadlag": 0.25}
TABLE_AND_PICTURE = {"history"}
FAST = 5000.0  # requests/s: the loopback server has no flood limit (Telegram's 30/s would take 6 min)


def _fuzz_config(tmp: Path) -> Config:
    """A copy of the demo database (the shared one is never written) with rules and firing alerts."""
    base = demo_config()
    path = tmp / "fuzz.db"
    src = sqlite3.connect(base.storage.path)
    with sqlite3.connect(path) as dst:
        src.backup(dst)
    src.close()
    cfg = with_rules(base, LEVEL, DIVERGE, JUMP, ZSCORE, STALE, path=path)
    db = open_db(path)
    # A past: the episodes the rules would have had (the replay of 2019-2025), and a stale feed.
    with db.conn:
        for e in backtest(db, cfg):
            if e.resolved_ts is not None:
                eid = alert_store.open_episode(
                    db, rule=e.rule, kind=e.kind, key=f"{e.a}/{e.b}", a=e.a, b=e.b, timeframe=e.timeframe,
                    window=e.window, severity="warning", fired_ts=e.fired_ts, value=e.value, detail=e.detail,
                    withheld=False)
                alert_store.close_episode(db, eid, e.resolved_ts, e.resolve_value)
        eid = alert_store.open_episode(db, rule="feed_stale", kind="stale", key="yahoo", a=None, b=None,
                                       timeframe=None, window=None, severity="warning", fired_ts=1_750_000_000,
                                       value=None, detail={}, withheld=False)
        alert_store.close_episode(db, eid, 1_750_010_000, None)
    evaluate(db, cfg, ["team"], now=1.9e9)  # no state yet: starts at the latest bar, where coupling fires
    db.close()
    return cfg


def _world(cfg: Config) -> World:
    with sqlite3.connect(cfg.storage.path) as conn:
        eps = conn.execute("SELECT id, a FROM episodes ORDER BY id").fetchall()
    assert eps, "the fixture needs firing alerts for the buttons to press"
    keys = sorted({k for m in (CorrLevelRule, CorrJumpRule, CorrZscoreRule, DivergenceRule, StaleRule)
                   for k in m.model_fields})
    flags = {c: (s.max_assets, s.window, s.timeframe, s.period) for c, s in SPECS.items()}
    return World(
        commands=list(SPECS), names=cfg.names, rules=[r.name for r in cfg.rules], rule_keys=keys,
        keys_of={r.name: sorted(set(type(r).model_fields) - {"name", "kind", "pairs", "timeframe"}) for r in cfg.rules},
        chart_episodes=[e for e, a in eps if a], other_episodes=[e for e, a in eps if not a],
        bot_username=load_fixture("getMe")["result"]["username"], flags=flags, weights=SLOW,
    )


def _with_senders(cfg: Config, gens: list[Gen]) -> Config:
    tg: dict[str, Any] = {
        "allowed_user_ids": sorted({g.sender.user_id for g in gens if g.sender.allowed and not g.sender.admin
                                    and g.sender.chat_type == "private"}),
        "admin_user_ids": sorted({g.sender.user_id for g in gens if g.sender.admin}),
        "allowed_chat_ids": sorted({g.sender.chat_id for g in gens if g.sender.allowed and not g.sender.admin
                                    and g.sender.chat_type != "private"}),
        "alert_levels": [0.5, -0.25],
    }
    return cfg.model_copy(update={"telegram": TelegramConfig(**tg)})


def _push(bot: BotHarness, g: Gen) -> str | None:
    s = g.sender
    if g.kind == "callback":
        return bot.server.push_callback(g.data, user_id=s.user_id, chat_id=s.chat_id, chat_type=s.chat_type)
    bot.server.push_command(g.text, user_id=s.user_id, chat_id=s.chat_id, chat_type=s.chat_type,
                            thread_id=g.thread_id, edited=g.kind == "edited", entity_length=g.entity_length)
    return None


async def _settle(bot: BotHarness, want_sends: int, want_answers: int, timeout: float) -> None:
    """Until the expected replies and answers have arrived and 1 s has passed without a call."""
    deadline = time.monotonic() + timeout
    server, seen, sends, answers, last = bot.server, 0, 0, 0, time.monotonic()
    while time.monotonic() < deadline:
        new = server.calls[seen:]  # counted once each: rescanning 20,000 calls 10x a second would cost
        seen += len(new)
        for c in new:
            sends += c.method in ("sendMessage", "sendPhoto")
            answers += c.method == "answerCallbackQuery"
            last = c.t if c.method != "getUpdates" else last
        quiet = time.monotonic() - last
        if sends >= want_sends and answers >= want_answers and quiet > 1.0:
            return
        if quiet > 10.0 and not server.pending:  # fewer replies than expected: the asserts say which
            return
        await asyncio.sleep(0.1)


def _check_call(c: Call) -> str | None:
    """What is wrong with one call the bot made, as Telegram would see it (None: fine)."""
    if c.status != 200:
        return f"{c.method} refused ({c.status}): {c.text[:120]!r}"
    mode = str(c.params.get("parse_mode") or "")
    if c.method in ("sendMessage", "editMessageText", "sendPhoto"):
        if mode.upper() != "HTML":
            return f"{c.method} without parse_mode=HTML (the plain-text fallback ran): {c.text[:120]!r}"
        try:
            plain = parse_html(c.text)
        except ValueError as exc:
            return f"{c.method}: bad HTML ({exc}): {c.text[:120]!r}"
        if re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]", plain):
            return f"{c.method}: control or bidi-override characters echoed: {plain[:120]!r}"
        limit = 1024 if c.method == "sendPhoto" else 4096
        if utf16_len(plain) > limit or (c.method != "sendPhoto" and not plain.strip()):
            return f"{c.method}: {utf16_len(plain)} UTF-16 units: {c.text[:120]!r}"
    if c.method == "answerCallbackQuery" and len(str(c.params.get("text") or "")) > 200:
        return f"callback answer over 200 characters: {c.params['text'][:120]!r}"
    return None


def _shape(calls: list[Call]) -> str:
    return "+".join("photo" if c.method == "sendPhoto" else "text" for c in calls)


def _allowed(g: Gen) -> set[str]:
    """One answer: a text or a picture; /history's answer is its table and then its picture."""
    if not g.replies:
        return {""}
    command = g.text[1:g.entity_length].split("@")[0].lower() if g.kind == "message" else ""
    return {"text", "photo", "text+photo"} if command in TABLE_AND_PICTURE else {"text", "photo"}


@pytest.mark.fuzz
def test_ten_thousand_generated_updates(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _fuzz_config(tmp_path_factory.mktemp("chatfuzz"))
    gens = generate(SEED, N, _world(cfg))
    kinds = Counter(g.kind for g in gens)
    assert len(gens) == N and kinds["callback"] > N // 10 and kinds["edited"] > N // 50, kinds
    caplog.set_level(logging.WARNING)
    bot = BotHarness(_with_senders(cfg, gens), overall_max_rate=FAST)
    try:
        start = len(bot.server.calls)
        t0 = time.monotonic()
        by_cq: dict[str, Gen] = {}
        for g in gens:
            cq = _push(bot, g)
            if cq is not None:
                by_cq[cq] = g
        want = sum(g.replies for g in gens)
        bot.run(_settle(bot, want, len(by_cq), timeout=600), timeout=660)
        elapsed = time.monotonic() - t0
        calls = bot.server.calls[start:]
    finally:
        bot.close()
    print(f"\n{N} updates ({dict(kinds)}) handled in {elapsed:.1f} s "
          f"({N / elapsed:.0f}/s); {len(calls)} Bot API calls")

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert bot.errors == 0 and not errors, [r.getMessage()[:300] for r in errors[:10]]

    problems = [p for p in (_check_call(c) for c in calls if c.method != "getUpdates") if p]
    assert not problems, problems[:20]

    by_chat: dict[int, Gen] = {g.sender.chat_id: g for g in gens}
    assert len(by_chat) == N  # one chat per update: every reply names the update it answers
    sent: dict[int, list[Call]] = defaultdict(list)
    for c in calls:
        if c.method in ("sendMessage", "sendPhoto"):
            sent[int(c.chat_id)].append(c)
    strays = [(cid, [c.text[:80] for c in cs]) for cid, cs in sent.items() if cid not in by_chat]
    assert not strays, strays[:10]
    wrong = [(g, [c.text[:100] for c in sent.get(cid, [])]) for cid, g in by_chat.items()
             if _shape(sent.get(cid, [])) not in _allowed(g)]
    assert not wrong, f"{len(wrong)} updates got the wrong number of replies: {wrong[:10]}"
    threads = [(g, c.params.get("message_thread_id")) for cid, g in by_chat.items() if g.thread_id
               for c in sent.get(cid, []) if c.params.get("message_thread_id") != g.thread_id]
    assert not threads, threads[:10]

    answers = Counter(str(c.params.get("callback_query_id")) for c in calls if c.method == "answerCallbackQuery")
    unanswered = [g for cq, g in by_cq.items() if answers[cq] != 1]
    assert not unanswered, f"{len(unanswered)} button presses not answered exactly once: {unanswered[:10]}"
    assert set(answers) == set(by_cq)

    # What the traffic wrote (mutes, /set overrides, subscriptions) leaves a sound database that
    # the next alert cycle can use.
    db = open_db(cfg.storage.path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    evaluate(db, cfg, ["team"], now=1.9e9 + 86400)
    db.close()
