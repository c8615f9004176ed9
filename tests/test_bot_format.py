"""bot.format / bot.replies as pure functions: splitting, captions, escaping, warm-up lines."""

from __future__ import annotations

from botapi_server import parse_html, utf16_len
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.format import CAPTION_LIMIT, MESSAGE_LIMIT, caption, esc, split_message, table
from bot.replies import corr_reply
from core.models import CorrReading


def test_warming_up_window_says_how_many_returns() -> None:
    ready = CorrReading("BTC", "PSCT", "1d", 30, 0.41, 30, 1755820800, (0.1, 0.6), 0.8, 0.4, None)
    warm = CorrReading("BTC", "PSCT", "1d", 90, None, 61, 1755820800, None, None, None, None)
    text = parse_html(corr_reply([ready, warm], []))
    assert "BTC/PSCT 1d w90: 61 of 90 returns" in text
    assert "w30: +0.41" in text and "1w · —" in text  # no week-old value: no arrow, a dash


def test_long_table_splits_into_valid_chunks() -> None:
    rows = [(f"ROW{i}", f"{i / 1000:+.2f}", "x" * 40) for i in range(400)]
    text = "<b>head</b>\n" + table(("name", "v", "pad"), rows, (False, True, False)) + "\ntail"
    chunks = split_message(text)
    assert len(chunks) > 3
    for c in chunks:
        assert utf16_len(c) <= MESSAGE_LIMIT
        parse_html(c)  # every chunk parses on its own: <pre> closed and reopened
    joined = "\n".join(parse_html(c) for c in chunks)
    assert all(f"ROW{i} " in joined for i in range(400))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=300), max_size=60), st.booleans())
def test_split_message_any_text(lines: list[str], pre: bool) -> None:
    body = "\n".join(esc(line, 300) for line in lines) or "x"
    text = f"<pre>{body}</pre>" if pre else body
    for c in split_message(text, limit=700):
        assert utf16_len(c) <= 700
        parse_html(c)


def test_one_huge_line_is_cut_without_breaking_entities() -> None:
    text = esc("<&>" * 3000, 10_000)
    chunks = split_message(text)
    assert all(utf16_len(c) <= MESSAGE_LIMIT for c in chunks)
    # a cut becomes a line break; nothing is lost or mangled
    assert "".join(parse_html(c) for c in chunks).replace("\n", "") == "<&>" * 3000


def test_emoji_count_as_two_units() -> None:
    chunks = split_message("\n".join(["🚀" * 100] * 40))
    assert len(chunks) == 2 and all(utf16_len(c) <= MESSAGE_LIMIT for c in chunks)


def test_caption_stays_under_1024() -> None:
    cap = caption("\n".join(f"<b>line {i}</b> " + "x" * 50 for i in range(100)))
    assert utf16_len(cap) <= CAPTION_LIMIT
    parse_html(cap)


def test_esc_neutralises_markup_and_controls() -> None:
    assert esc("<b>&_*[\x00\x07") == "&lt;b&gt;&amp;_*["
    assert esc("y" * 500).endswith("…") and len(esc("y" * 500)) == 64
