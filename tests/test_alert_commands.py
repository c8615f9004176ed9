"""The alert commands and buttons through the real PTB Application and the loopback Bot API,
on a copy of the real demo database with rules configured and alerts firing."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from botapi_server import ADMIN, GROUP, STRANGER, USER, BotHarness, demo_config
from test_alerts import DIVERGE, LEVEL, with_rules

from service.backtest import backtest
from service.evaluate import evaluate
from storage.db import open_db


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotHarness]:
    base = demo_config()
    path = tmp_path_factory.mktemp("alertcmds") / "alerts.db"
    src = sqlite3.connect(base.storage.path)
    with sqlite3.connect(path) as dst:
        src.backup(dst)
    src.close()
    cfg = with_rules(base, LEVEL, DIVERGE, path=path)
    cfg = cfg.model_copy(update={"telegram": base.telegram})
    db = open_db(path)
    evaluate(db, cfg, ["team"], now=1.9e9)  # no state: starts at the latest bar (2025-08-22)
    db.close()
    h = BotHarness(cfg)
    yield h
    h.close()


def one(bot: BotHarness, text: str, **kw: Any) -> str:
    return bot.one(text, **kw)


def rows(bot: BotHarness, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(bot.cfg.storage.path) as conn:
        return conn.execute(sql).fetchall()


def test_alerts_lists_what_is_firing(bot: BotHarness) -> None:
    firing = rows(bot, "SELECT rule, key, fire_value FROM episodes WHERE resolved_ts IS NULL ORDER BY id")
    assert firing, "BTC/IWM w30 is at +0.67 on 2025-08-22: coupling fires"
    text = one(bot, "/alerts 3")
    assert f"Firing now ({len(firing)})" in text
    for rule, key, value in firing:
        line = next(line for line in text.splitlines() if rule in line and key in line)
        assert "firing" in line and f"{value:+.2f}" in line


def test_rules_show_thresholds_pairs_and_state(bot: BotHarness) -> None:
    text = one(bot, "/rules")
    assert "coupling · corr_level · 1d w30" in text and "above 0.6, clear_below 0.4" in text
    assert "pairs: BTC/IWM, BTC/SMALLCAP_TECH, ETH/IWM" in text
    assert re.search(r"diverge · divergence · 1d w90 · (quiet|🔔 \d+ firing)", text)


def test_mute_list_and_unmute(bot: BotHarness) -> None:
    reply = one(bot, "/mute 2h btc/iwm")
    m = re.search(r"Muted #(\d+) BTC/IWM until", reply)
    assert m, reply
    assert f"#{m.group(1)} BTC/IWM" in one(bot, "/mute")
    assert rows(bot, f"SELECT rule, target FROM mutes WHERE id = {m.group(1)}") == [(None, "BTC/IWM")]
    assert "Lifted 1 mute" in one(bot, f"/unmute {m.group(1)}")
    assert "No active mutes" in one(bot, "/mute")


@pytest.mark.parametrize("args", ["", "abc", "2h nosuch", "0m", "45d", "2h btc/btc", "1h a b c"])
def test_bad_mute_arguments_get_one_line(bot: BotHarness, args: str) -> None:
    text = one(bot, f"/mute {args}" if args else "/unmute")
    assert "\n" not in text and ("usage:" in text or "unknown" in text or "not a watched pair" in text
                                 or "from 1m to 30d" in text), text


def test_set_is_for_admins_validated_and_resettable(bot: BotHarness) -> None:
    assert "admins only" in one(bot, "/set coupling above 0.7", user_id=USER)
    text = one(bot, "/set coupling above 0.7", user_id=ADMIN)
    assert "above = 0.7" in text and "set: above=0.7" in text
    assert "set: above=0.7" in one(bot, "/rules")
    assert "/set coupling: above=0.7" in one(bot, "/status", user_id=ADMIN)
    bad = one(bot, "/set coupling above 2", user_id=ADMIN)
    assert "coupling.above" in bad and "1" in bad
    assert "no settable key" in one(bot, "/set coupling colour red", user_id=ADMIN)
    assert "unknown rule" in one(bot, "/set nosuch above 0.5", user_id=ADMIN)
    assert "back to its configured settings" in one(bot, "/set coupling reset", user_id=ADMIN)
    assert "set: " not in one(bot, "/rules")


def test_backtest_counts_per_pair(bot: BotHarness) -> None:
    text = one(bot, "/backtest coupling all")
    db = open_db(bot.cfg.storage.path)
    expected: dict[str, int] = {}
    for e in backtest(db, bot.cfg, rule="coupling"):
        expected[f"{e.a}/{e.b}"] = expected.get(f"{e.a}/{e.b}", 0) + 1
    db.close()
    for pair, n in expected.items():
        assert f"coupling {pair}: would have fired {n} time" in text
    assert "unknown rule" in one(bot, "/backtest nosuch")


def test_subscribe_private_and_group_admin_only(bot: BotHarness) -> None:
    assert "will get alert pushes" in one(bot, "/subscribe", user_id=USER)
    assert "already gets" in one(bot, "/subscribe", user_id=USER)
    assert rows(bot, f"SELECT enabled, origin FROM push_chats WHERE configured = '{USER}'") == [(1, "subscribe")]
    assert "admins only" in one(bot, "/subscribe", chat_id=GROUP, chat_type="group", user_id=USER)
    assert "No more alert pushes" in one(bot, "/unsubscribe", user_id=USER)
    assert rows(bot, f"SELECT enabled FROM push_chats WHERE configured = '{USER}'") == [(0,)]


def _episode(bot: BotHarness) -> tuple[int, str, str]:
    eid, rule, key = rows(bot, "SELECT id, rule, key FROM episodes WHERE key LIKE '%/%' ORDER BY id LIMIT 1")[0]
    return int(eid), str(rule), str(key)


def test_mute_button_mutes_that_rule_and_pair(bot: BotHarness) -> None:
    eid, rule, key = _episode(bot)
    before = len(bot.server.sent("answerCallbackQuery"))
    bot.server.push_callback(f"m:{eid}:24h", user_id=USER)
    bot.run(bot.server.wait_for("answerCallbackQuery", count=before + 1, timeout=10))
    answer = bot.server.sent("answerCallbackQuery")[-1].params
    assert f"Muted {rule} {key} for 24h" in answer["text"]
    assert rows(bot, "SELECT rule, target FROM mutes ORDER BY id DESC LIMIT 1") == [(rule, key)]


def test_chart_button_sends_the_alert_pair(bot: BotHarness) -> None:
    eid, _, key = _episode(bot)
    before = len(bot.server.sent("sendPhoto"))
    bot.server.push_callback(f"c:{eid}", user_id=USER)
    photos = bot.run(bot.server.wait_for("sendPhoto", count=before + 1, timeout=30))
    a, b = key.split("/")
    caption = photos[-1].params["caption"]
    assert f"{a} / {b}" in caption
    assert "alert levels: 0.6, 0.4" in caption  # the rule's own thresholds are drawn


def test_buttons_refuse_strangers_and_unknown_data(bot: BotHarness) -> None:
    eid, _, _ = _episode(bot)
    n_mutes = len(rows(bot, "SELECT id FROM mutes"))
    before = len(bot.server.sent("answerCallbackQuery"))
    bot.server.push_callback(f"m:{eid}:1h", user_id=STRANGER)
    bot.server.push_callback("bogus", user_id=USER)
    calls = bot.run(bot.server.wait_for("answerCallbackQuery", count=before + 2, timeout=10))
    texts = [c.params.get("text", "") for c in calls[-2:]]
    assert "private" in texts[0] and "not ours" in texts[1]
    assert len(rows(bot, "SELECT id FROM mutes")) == n_mutes


def test_status_shows_alerts_to_admins(bot: BotHarness) -> None:
    text = one(bot, "/status", user_id=ADMIN)
    assert re.search(r"Alerts: \d+ firing · outbox \d+ waiting", text)
    assert "alerts firing:" in one(bot, "/status", user_id=USER)


def test_button_for_a_missing_alert_is_answered_once_with_the_reason(bot: BotHarness) -> None:
    """Found by the chat fuzz: "Drawing the chart…" went first, so the reason was a second
    answer, which Telegram refuses; the user saw nothing."""
    stale = rows(bot, "SELECT max(id) FROM episodes")[0][0] + 1000
    for data, reason in ((f"c:{stale}", "no chart for that alert"), ("c:5\n", "not ours"), ("c:٣", "not ours"),
                         (f"m:{stale}", "not ours"), (f"m:{stale}:1h", "no longer known")):
        before = len(bot.server.calls)
        cq = bot.server.push_callback(data, user_id=USER)
        bot.run(bot.server.wait_for("answerCallbackQuery", lambda c, cq=cq: c.params["callback_query_id"] == cq))
        bot.run(bot.server.idle(quiet=0.3))
        answers = [c for c in bot.server.calls[before:] if c.method == "answerCallbackQuery"]
        assert [c.status for c in answers] == [200], data
        assert reason in answers[0].params["text"], (data, answers[0].params)
        assert not [c for c in bot.server.calls[before:] if c.method == "sendPhoto"]


def test_long_lists_fit_one_message(bot: BotHarness) -> None:
    for _ in range(120):
        assert one(bot, "/mute 1h").startswith("🔕 Muted #")
    replies = bot.ask("/mute")
    assert len(replies) == 1 and replies[0].plain.startswith("Active mutes\n")
    assert re.search(r"\n… \d+ more not shown$", replies[0].plain)
    assert one(bot, "/unmute all").startswith("🔔 Lifted ")


def test_set_window_must_be_configured(bot: BotHarness) -> None:
    """Found by the chat fuzz: /set accepted any window, and a rule on a window that is not
    computed silently never fires. The config refuses it; so does /set now."""
    text = one(bot, "/set coupling window 45", user_id=ADMIN)
    assert text == "coupling.window: 45 is not one of the 1d windows [30, 90]"
    assert "window" not in str(rows(bot, "SELECT key FROM rule_overrides WHERE rule = 'coupling'"))
    assert one(bot, "/set coupling window 90", user_id=ADMIN).startswith("✔ coupling: window = 90")
    assert one(bot, "/set coupling reset", user_id=ADMIN).startswith("coupling is back to its configured settings")
