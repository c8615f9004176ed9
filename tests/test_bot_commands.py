"""Every chat command through the real python-telegram-bot Application and a loopback Bot API.

Replies are checked against `service.queries` on the demo database: the numbers are parsed
out of the reply text the server received, not compared with strings from bot/.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from botapi_server import ADMIN, GROUP, STRANGER, BotHarness, demo_config
from reference import basket, daily_close, divergence_last

from bot.args import SPECS
from core.models import CorrReading
from service import queries as q
from service.demo import demo_files
from storage.db import open_db

NUM = r"([+-]?\d+\.\d+|—)"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bot() -> Iterator[BotHarness]:
    h = BotHarness(demo_config())
    yield h
    h.close()


@pytest.fixture(scope="module")
def db(bot: BotHarness):  # type: ignore[no-untyped-def]
    conn = open_db(bot.cfg.storage.path)
    yield conn
    conn.close()


def one(bot: BotHarness, text: str, **kw: object) -> str:
    return bot.one(text, **kw)


def num(s: str) -> float | None:
    return None if s == "—" else float(s)


def close(x: float | None, y: float | None, tol: float = 0.0051) -> bool:
    return (x is None and y is None) or (x is not None and y is not None and abs(x - y) <= tol)


def test_menu_registered_and_listed_in_help(bot: BotHarness) -> None:
    menu = [c for c in bot.server.calls if c.method == "setMyCommands"]
    assert menu, "setMyCommands not called at start"
    registered = [c["command"] for c in menu[-1].params["commands"]]
    assert registered == list(SPECS)
    text = one(bot, "/help")
    for cmd in registered:
        assert re.search(rf"^/{cmd}\b", text, re.M), f"/{cmd} missing from /help"
    assert "e.g." in text


def test_readme_lists_every_registered_command() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^#+\s*Chat commands\s*$(.*?)(?=^#{1,2}\s|\Z)", readme, re.M | re.S | re.I)
    assert m is not None, "README.md needs a 'Chat commands' section"
    missing = {cmd for cmd in SPECS if not re.search(rf"/{cmd}\b", m.group(1))}
    assert not missing, f"registered but not in README 'Chat commands': {sorted(missing)}"


def _check_corr(text: str, readings: list[CorrReading]) -> None:
    assert f"{readings[0].a} / {readings[0].b}" in text
    for r in readings:
        if r.value is None:
            assert f"{r.n} of {r.window} returns" in text
            continue
        m = re.search(rf"w{r.window}: {NUM}\s+\(95% CI {NUM} … {NUM}, n=(\d+)\)\n"
                      rf"\s+1w \S {NUM} · β {NUM} · EWMA {NUM}", text)
        assert m, text
        value, lo, hi, n, ch, beta, ewma = m.groups()
        assert close(num(value), r.value)
        assert r.ci95 is not None and close(num(lo), r.ci95[0]) and close(num(hi), r.ci95[1])
        assert int(n) == r.n
        assert close(num(ch), r.change_1w) and close(num(beta), r.beta)
        assert close(num(ewma), r.ewma)
    assert f"as of {readings[0].asof_iso()}" in text
    assert "data:" in text and "ago" in text


def test_corr_defaults_answer_the_main_question(bot: BotHarness, db) -> None:  # type: ignore[no-untyped-def]
    readings = q.corr_readings(db, bot.cfg)
    assert len(readings) == 2 and all(r.value is not None for r in readings)
    _check_corr(one(bot, "/corr"), readings)


@pytest.mark.parametrize("args,a,b,window", [
    ("eth iwm 30", "ETH", "IWM", 30), ("BTC", "BTC", None, None),
    ("sol PSCT w90", "SOL", "PSCT", 90), ("iwm btc", "IWM", "BTC", None),
    ("alts smallcap_tech", "ALTS", "SMALLCAP_TECH", None), ("btc psct 90 1d", "BTC", "PSCT", 90),
])
def test_corr_with_arguments(bot: BotHarness, db, args: str, a: str, b: str | None,  # type: ignore[no-untyped-def]
                             window: int | None) -> None:
    readings = q.corr_readings(db, bot.cfg, a, b, window=window)
    _check_corr(one(bot, f"/corr {args}"), readings)


def test_corr_in_allowed_group_addressed_to_us(bot: BotHarness, db) -> None:  # type: ignore[no-untyped-def]
    text = one(bot, "/corr@mybot eth", chat_id=GROUP, chat_type="group", user_id=STRANGER)
    _check_corr(text, q.corr_readings(db, bot.cfg, "ETH"))
    assert bot.ask("/corr@otherbot", chat_id=GROUP, chat_type="group", timeout=1.5) == []


def test_rank_table(bot: BotHarness, db) -> None:  # type: ignore[no-untyped-def]
    for args, a, w in (("", None, None), ("eth 30", "ETH", 30), ("iwm", "IWM", None)):
        r = q.rank(db, bot.cfg, a, window=w)
        replies = bot.ask(f"/rank {args}".strip())
        assert len(replies) == 1 and "<pre>" in replies[0].text
        text = replies[0].plain
        assert f"w{r.window}" in text
        rows = re.findall(rf"^\s*(\d+)\s+(\S+)\s+{NUM}\s+(\d+)$", text, re.M)
        assert [row[1] for row in rows] == [x.b for x in r.rows]
        for (_, _, v, n), x in zip(rows, r.rows, strict=True):
            assert close(num(v), x.value) and int(n) == x.n


def test_history_table(bot: BotHarness, db) -> None:  # type: ignore[no-untyped-def]
    h = q.history(db, bot.cfg, "SOL")
    reply, photo = bot.ask("/history sol", quiet=3.0, timeout=30)  # the table, then its picture
    assert photo.method == "sendPhoto" and photo.files["photo"].startswith(PNG)
    got: dict[tuple[str, str], float | None] = {}
    for block in re.findall(r"<pre>(.*?)</pre>", reply.text, re.S):
        header, *lines = block.splitlines()
        periods = header.split()[1:]
        for line in lines:
            name, *vals = line.split()
            got.update({(name, p): num(v) for p, v in zip(periods, vals, strict=True)})
    assert len(got) == len(h.rows)
    for row in h.rows:
        assert close(got[(row.b, row.period)], row.value), row


PCT = r"([+-]\d+\.\d)%"


@pytest.mark.parametrize("args, a, b", [("", "BTC", "SMALLCAP_TECH"), ("eth qqq", "ETH", "QQQ")])
def test_diverge_numbers_equal_pandas(bot: BotHarness, args: str, a: str, b: str) -> None:
    prices = {name: daily_close(path) for name, path in demo_files().items()}
    sessions = prices["IWM"].index
    prices["SMALLCAP_TECH"] = basket({m: prices[m].reindex(sessions).dropna() for m in ("PSCT", "XSW")},
                                     {"PSCT": 0.5, "XSW": 0.5})
    ref = divergence_last(prices[a], prices[b], 90, 3)
    text = one(bot, f"/diverge {args}".strip())
    assert f"{a} vs {b}" in text and "last 3 sessions (β over 90)" in text
    m = re.search(rf"{a} {PCT} vs {b} {PCT}; expected {PCT} \(β {NUM}\); residual {PCT}, z ([+-]\d+\.\d) "
                  rf"\(ρ {NUM}\)", text)
    assert m, text
    got = [float(x) for x in m.groups()]
    want = [ref["r_a"] * 100, ref["r_b"] * 100, ref["expected"] * 100, ref["beta"], ref["residual"] * 100,
            ref["z"], ref["rho"]]
    for g, w, tol in zip(got, want, (0.051, 0.051, 0.051, 0.0051, 0.051, 0.051, 0.0051), strict=True):
        assert abs(g - w) <= tol, (g, w, text)


def test_chart_is_a_png_with_a_short_caption(bot: BotHarness, db) -> None:  # type: ignore[no-untyped-def]
    replies = bot.ask("/chart btc iwm 30 6m", quiet=0.5, timeout=30)
    assert [r.method for r in replies] == ["sendPhoto"]
    photo = replies[0]
    assert photo.files["photo"].startswith(PNG) and len(photo.files["photo"]) > 10_000
    cap = photo.plain
    assert len(cap) < 1024 and "BTC / IWM" in cap and "w30" in cap and "6m" in cap
    frames = q.chart_data(db, bot.cfg, "BTC", "IWM", window=30, period_days=180)
    m = re.search(rf"now {NUM}", cap)
    assert m and close(num(m.group(1)), float(frames.corr["value"].dropna().iloc[-1]))
    assert any(c.method == "sendChatAction" for c in bot.server.calls)


def _colour_pixels(png: bytes, rgb: tuple[int, int, int], top: float, bottom: float) -> int:
    """Pixels within a small distance of ``rgb`` in a horizontal band of the picture."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)
    h = img.shape[0]
    band = img[int(h * top) : int(h * bottom)]
    return int((np.abs(band - np.array(rgb)).sum(axis=2) < 40).sum())


def test_chart_sent_through_the_command_draws_both_prices(bot: BotHarness) -> None:
    # The picture the user receives, not the renderer fed by hand: the lower panel (the
    # bottom ~40% of the figure) must hold both price lines — orange for A, blue for B.
    png = bot.ask("/chart btc iwm 90 1y", quiet=0.5, timeout=30)[0].files["photo"]
    assert _colour_pixels(png, (0xE6, 0x9F, 0x00), 0.62, 0.95) > 500  # BTC
    assert _colour_pixels(png, (0x00, 0x72, 0xB2), 0.62, 0.95) > 500  # IWM


def test_chart_all_history_default_pair(bot: BotHarness) -> None:
    replies = bot.ask("/chart all", quiet=0.5, timeout=30)
    assert [r.method for r in replies] == ["sendPhoto"]
    assert "BTC / SMALLCAP_TECH" in replies[0].params["caption"]


def test_status_summary_and_admin_detail(bot: BotHarness, db) -> None:  # type: ignore[no-untyped-def]
    report = q.status(db, bot.cfg)
    short = one(bot, "/status")
    assert report.version in short and "up " in short
    assert "DB " not in short and "Feeds" not in short  # detail is for admins
    full = one(bot, "/status", user_id=ADMIN)
    assert (report.version in full and "DB " in full and "Jobs" in full) or "no scheduled" in full
    for f in report.freshness:
        assert re.search(rf"^{re.escape(f.asset)}\s+{f.timeframe}\s+\d{{4}}-\d\d-\d\d", full, re.M)


def test_admin_only_poll(bot: BotHarness, caplog: pytest.LogCaptureFixture) -> None:
    assert one(bot, "/poll") == "That command is for admins only."
    assert "admin only" in caplog.text
    assert "not scheduled" in one(bot, "/poll", user_id=ADMIN)


def test_start_ignores_deep_link_payload(bot: BotHarness) -> None:
    text = one(bot, "/start <b>payload&amp;")
    assert "payload" not in text and "/corr" in text


def test_unknown_command(bot: BotHarness) -> None:
    assert "see /help" in one(bot, "/nonsense foo")
    # in a group a bare unknown command may be for another bot; addressed to us, it is ours
    assert bot.ask("/nonsense", chat_id=GROUP, chat_type="group", timeout=1.5) == []
    assert "see /help" in one(bot, "/nonsense@mybot", chat_id=GROUP, chat_type="group")
    assert bot.errors == 0


def test_stranger_gets_one_refusal_and_no_data(bot: BotHarness,
                                               caplog: pytest.LogCaptureFixture) -> None:
    secret = "/corr btc psct my-private-words-123"
    text = one(bot, secret, user_id=STRANGER)
    assert text == "Sorry, this bot is private."
    assert "private-words" not in caplog.text and str(STRANGER) in caplog.text
    # a group that is not allowed gets the same single refusal
    assert one(bot, "/rank", chat_id=-100777, chat_type="group", user_id=STRANGER) == text
    assert bot.ask("just chatting", user_id=STRANGER, timeout=1.5) == []
