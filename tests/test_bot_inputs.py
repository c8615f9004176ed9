"""Bad, odd and hostile arguments: each gets exactly one short reply, never silence, never a
traceback, never an entity Telegram cannot parse (the loopback server parses HTML strictly).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from botapi_server import ADMIN, BotHarness, demo_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.args import SPECS

ODD = [
    "<b>", "</b>", "<b>bold", "_*[", "*bold* _it_ [x](http://e.x)", "&amp;", "&", "a&b<c>d",
    "ß", "🚀🚀", "БТЦ", "\u200b", "i̇", "ﬀ", "x" * 41, "BTC " * 30, "A" * 4000,
    "0", "-5", "99999999", "w", "w0", "1e9", "nan", "inf", "30 90", "BTC BTC BTC",
    "btc psct 30 30", "btc 7", "1h", "1d 1h", "btc psct 0d", "btc psct 999y", "'; DROP TABLE corr;--",
    "%s %d {}", "\\", "`code`", "<pre>", "</pre>", "<a href='x'>", "@mybot", "btc\tpsct",
]

ERROR_LINE = re.compile(
    r"^(usage: /\w+.* — e\.g\. /\w+.*|unknown asset .*|window \d+ is not configured .*|"
    r"timeframe .* is not configured .*|period must be .*|.* are not a watched pair.*|"
    r".*: \d+ of \d+ returns)$"
)


@pytest.fixture(scope="module")
def bot() -> Iterator[BotHarness]:
    h = BotHarness(demo_config())
    yield h
    h.close()


def _no_parse_errors(bot: BotHarness) -> None:
    bad = [c for c in bot.server.calls if c.status == 400]
    assert not bad, [(c.method, c.params.get("text", "")[:80]) for c in bad]
    assert bot.errors == 0


@pytest.mark.parametrize("command", ["corr", "rank", "history", "chart", "diverge", "status"])
@pytest.mark.parametrize("arg", ODD)
def test_listed_bad_arguments(bot: BotHarness, command: str, arg: str) -> None:
    replies = bot.ask(f"/{command} {arg}", quiet=0.15)
    assert len(replies) == 1, [r.text for r in replies]
    reply = replies[0]
    if reply.method == "sendMessage":
        text = reply.plain
        assert "Traceback" not in text and "Error" not in text.split(":")[0]
        if not text.startswith(("corrbot", "BTC", "ETH")) and "ranked" not in text:
            assert "\n" not in text and ERROR_LINE.match(text), text
        assert len(text) < 400 or command != "corr" or "/" in text
    _no_parse_errors(bot)


def test_usage_lines_name_the_command(bot: BotHarness) -> None:
    for command in ("corr", "rank", "history", "chart", "diverge", "status"):
        (reply,) = bot.ask(f"/{command} a b c d e f g h", quiet=0.1)
        assert reply.plain.startswith(f"usage: {SPECS[command].syntax}")


def test_unknown_asset_suggests(bot: BotHarness) -> None:
    (reply,) = bot.ask("/corr btcc", quiet=0.1)
    assert reply.plain.startswith("unknown asset 'btcc' — did you mean") and "BTC" in reply.plain
    (reply,) = bot.ask("/rank <b>psc", quiet=0.1)
    assert reply.plain.startswith("unknown asset '<b>psc'")  # literally, not as markup
    assert "&lt;b&gt;" in reply.text


def test_wrong_window_says_what_is_allowed(bot: BotHarness) -> None:
    (reply,) = bot.ask("/corr btc psct 45", quiet=0.1)
    assert reply.plain == "window 45 is not configured for 1d (one of 30, 90)"
    (reply,) = bot.ask("/corr btc 1h", quiet=0.1)
    assert reply.plain.startswith("timeframe 1h is not configured")


def test_not_a_pair(bot: BotHarness) -> None:
    (reply,) = bot.ask("/corr btc eth", quiet=0.1)
    assert "not a watched pair" in reply.plain


texts = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc"), include_characters="\n\t"),
    max_size=120,
)
tokens = st.lists(
    st.one_of(
        texts,
        st.sampled_from(["btc", "ETH", "psct", "30", "90", "w30", "1y", "6m", "all", "1h", "<i>",
                         "&lt;", "_*[", "iwm", "smallcap_tech", "45", "0d"]),
    ),
    max_size=7,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from([*SPECS, "corr@mybot", "Corr"]), args=tokens,
       admin=st.booleans())
def test_generated_arguments_get_exactly_one_reply(
    bot: BotHarness, command: str, args: list[str], admin: bool
) -> None:
    text = f"/{command} " + " ".join(args)
    kw = {"user_id": ADMIN} if admin else {}
    history = command.lower() == "history"  # its table, then (when there is one) its picture
    replies = bot.ask(text, quiet=3.0 if history else 0.15, timeout=20, **kw)
    methods = [r.method for r in replies]
    assert len(replies) == 1 or (history and methods == ["sendMessage", "sendPhoto"]), (
        text, [r.text for r in replies])
    _no_parse_errors(bot)
    assert all(len(r.plain) <= 4096 for r in replies)


@pytest.mark.parametrize("text", ["/help@mybot!", "/help@mybot.", "/help@MYBOT,", "/help@"])
def test_command_is_the_entity_not_the_first_word(bot: BotHarness, text: str) -> None:
    """Telegram marks ``/help@mybot`` as the command in ``/help@mybot!``; it was taken for a
    command to a bot named ``mybot!`` and ignored (found by the chat fuzz)."""
    entity = len(text.rstrip("!.,@"))
    replies = bot.ask(text, entity_length=entity, quiet=0.15)
    assert len(replies) == 1 and replies[0].plain.startswith("Commands\n/corr "), [r.text for r in replies]


def test_other_bots_commands_are_ignored_in_groups(bot: BotHarness) -> None:
    from botapi_server import GROUP
    assert bot.ask("/help@otherbot", chat_id=GROUP, chat_type="group", quiet=0.3) == []
    assert bot.ask("/nosuch", chat_id=GROUP, chat_type="group", quiet=0.3) == []
    (reply,) = bot.ask("/nosuch@mybot", chat_id=GROUP, chat_type="group", quiet=0.2)
    assert reply.plain == "Unknown command — see /help"
