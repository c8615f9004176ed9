"""Bad configs, listed and generated (issue 8): `corrbot check-config` answers every one with
exit 2 and ONE line naming the key (or the TOML line), never a traceback; a config it accepts
loads. Each starts from the shipped config.example.toml.

- `MISTAKES`: mistakes people make in the example (the ones in tests/test_config.py are not
  repeated), each with the key and what the line must say.
- Generated: hypothesis mutates the example's parsed data (wrong types, missing and extra keys,
  out-of-range, huge and non-finite numbers, odd unicode, empty tables, unknown assets and
  durations in rules and baskets) and its text (broken and duplicate lines, stray characters).
- A few as the installed `corrbot` program, a real process.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from core.config import Config, load_config
from service.cli import main

EXAMPLE_TEXT = (REPO / "config.example.toml").read_text(encoding="utf-8")
EXAMPLE = tomllib.loads(EXAMPLE_TEXT)
TOP_KEYS = set(Config.model_fields)


def edit(*pairs: tuple[str, str]) -> str:
    """The example with each ``old`` replaced once by ``new`` (``old`` must be there)."""
    text = EXAMPLE_TEXT
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def line_of(text: str, snippet: str) -> str:
    """``line N``: where ``snippet`` starts in ``text`` (so the cases survive edits of the example)."""
    return f"line {text[: text.index(snippet)].count(chr(10)) + 1}"


def rule_after(name: str, line: str) -> str:
    """The example with ``line`` added to the rule called ``name``."""
    return edit((f'name = "{name}"', f'name = "{name}"\n{line}'))


# id -> (config text, the key the line must name, regex for what it must say)
MISTAKES: dict[str, tuple[str, str, str]] = {
    # ---- alert rules
    "duration-in-words": (edit(('after = "2h"', 'after = "2 hours"')), "rules[4].after",
                          r"not a duration: '2 hours' \(use e\.g\. 30m, 6h"),
    "duration-hrs": (rule_after("btc_smallcap_coupling", 'repeat_interval = "6hrs"'), "rules[0].repeat_interval",
                     r"not a duration: '6hrs'"),
    "negative-cooldown": (rule_after("btc_diverges", "cooldown = -5"), "rules[3].cooldown", r"cannot be negative"),
    "boolean-cooldown": (rule_after("btc_diverges", "cooldown = true"), "rules[3].cooldown",
                         r'a duration like "6h" or 0'),
    "kind-typo": (edit(('kind = "corr_level"', 'kind = "corr_levle"')), "rules[0].kind",
                  r"unknown kind 'corr_levle' \(one of corr_level, corr_jump"),
    "kind-missing": (edit(('kind = "corr_zscore"\n', "")), "rules[2].kind", r"required \(one of corr_level"),
    "threshold-typo": (edit(("above = 0.6", "abvoe = 0.6")), "rules[0].abvoe", r"unknown key"),
    "pair-not-watched": (edit(('pairs = ["BTC/SMALLCAP_TECH", "BTC/IWM"]\nabove',
                               'pairs = ["BTC/SMALLCAP_TECH", "BTC/QQQQ"]\nabove')),
                         "rules[0].pairs[1]", r"BTC/QQQQ is not a watched pair"),
    "pair-with-dash": (edit(('pairs = ["BTC/IWM"]\nlookback', 'pairs = ["BTC-IWM"]\nlookback')), "rules[1].pairs[0]",
                       r"'BTC-IWM' is not a pair like \"BTC/IWM\""),
    "pairs-not-a-list": (edit(('pairs = ["BTC/IWM"]\nlookback', 'pairs = "BTC/IWM"\nlookback')), "rules[1].pairs",
                         r"valid list"),
    "rule-window-not-configured": (edit(("window = 30\npairs = [\"BTC/SMALLCAP_TECH\", \"BTC/IWM\"]",
                                         "window = 45\npairs = [\"BTC/SMALLCAP_TECH\", \"BTC/IWM\"]")),
                                   "rules[0].window", r"45 is not one of the 1d windows \[30, 90\]"),
    "rule-weekly": (rule_after("corr_unusual", 'timeframe = "1w"'), "rules[2].timeframe", r"'1d' or '1h'"),
    "correlation-above-1": (edit(("above = 0.6", "above = 1.5")), "rules[0].above", r"less than or equal to 1"),
    "above-and-below": (edit(("above = 0.6", "above = 0.6\nbelow = -0.2")), "rules[0]", r"exactly one of above"),
    "hysteresis-backwards": (edit(("clear_below = 0.4", "clear_below = 0.7")), "rules[0]",
                             r"clear_below must be at or under above"),
    "duplicate-rule-name": (edit(('name = "corr_unusual"', 'name = "corr_jump"')), "rules[2].name",
                            r"duplicate rule name 'corr_jump' \(also rules\[1\]\)"),
    "stale-source-typo": (rule_after("feed_stale", 'sources = ["binanse"]'), "rules[4].sources[0]",
                          r"unknown source 'binanse' \(one of binance, kraken, yahoo\)"),
    "severity-capitalised": (edit(('severity = "critical"', 'severity = "Critical"')), "rules[3].severity",
                             r"'critical', 'warning' or 'info'"),
    "for-bars-zero": (rule_after("corr_jump", "for_bars = 0"), "rules[1].for_bars", r"greater than or equal to 1"),
    "delta-zero": (edit(("delta = 0.3", "delta = 0")), "rules[1].delta", r"greater than 0"),
    "history-too-short": (edit(("history = 252", "history = 5")), "rules[2].history", r"greater than or equal to 10"),
    "rules-as-a-table": (edit(('[[rules]]\nname = "btc_smallcap_coupling"', '[rules]\nname = "btc_smallcap_coupling"')),
                         "line", r"not valid TOML .*line \d+ is '\[\[rules\]\]'"),
    # ---- schedule, correlation, feeds, telegram, storage
    "timezone-typo": (edit(('timezone = "UTC"', 'timezone = "Europe/Londn"')), "schedule.timezone",
                      r"unknown time zone 'Europe/Londn' \(use an IANA name"),
    "digest-one-digit-hour": (edit(('# digest_time = "08:30"', 'digest_time = "8:30"')), "schedule.digest_time",
                              r"use HH:MM, 24-hour"),
    "poll-zero": (edit(("crypto_poll_minutes = 5", "crypto_poll_minutes = 0")), "schedule.crypto_poll_minutes",
                  r"greater than or equal to 1"),
    "close-delay-over": (edit(("close_delay_minutes = 20", "close_delay_minutes = 601")),
                         "schedule.close_delay_minutes", r"less than or equal to 600"),
    "lambda-one": (edit(("ewma_lambda = 0.94", "ewma_lambda = 1.0")), "correlation.ewma_lambda", r"less than 1"),
    "lambda-nan": (edit(("ewma_lambda = 0.94", "ewma_lambda = nan")), "correlation.ewma_lambda", r"finite number"),
    "backoff-inf": (edit(("backoff_seconds = 2.0", "backoff_seconds = inf")), "feeds.backoff_seconds",
                    r"finite number"),
    "four-hour-timeframe": (edit(('timeframes = ["1d", "1h"]', 'timeframes = ["1d", "4h"]')),
                            "correlation.timeframes[1]", r"'1d' or '1h'"),
    "windows-as-text": (edit(("windows = [30, 90]", 'windows = "30, 90"')), "correlation.windows", r"valid list"),
    "window-twice": (edit(("windows = [30, 90]", "windows = [30, 30, 90]")), "correlation.windows",
                     r"duplicate window"),
    "weekly-timeframe-windows": (edit(('# timeframe_windows = { "1h" = [35, 140] }',
                                       'timeframe_windows = { "1w" = [30] }')),
                                 "correlation.timeframe_windows.1w", r"'1d' or '1h'"),
    "default-crypto-unknown": (edit(('default_crypto = "BTC"', 'default_crypto = "DOGE"')),
                               "correlation.default_crypto", r"unknown asset 'DOGE'"),
    "fifteen-minute-bars": (edit(('crypto_bar = "1h"', 'crypto_bar = "15m"')), "feeds.crypto_bar", r"'1h' or '30m'"),
    "retries-negative": (edit(("retries = 4", "retries = -1")), "feeds.retries", r"greater than or equal to 0"),
    "backfill-huge": (edit(("backfill_days = 730", "backfill_days = 99999999999999999999")), "feeds.backfill_days",
                      r"less than or equal to 20000"),
    "ccxt-url-port-only": (edit(('# ccxt_urls = { binance = "http://127.0.0.1:8081" }',
                                 "ccxt_urls = { binance = 8081 }")), "feeds.ccxt_urls.binance", r"valid string"),
    "channel-not-in-a-list": (edit(("alert_chat_ids = []", 'alert_chat_ids = "@corrbot_alerts"')),
                              "telegram.alert_chat_ids", r"valid list"),
    "username-for-user-id": (edit(("allowed_user_ids = []", 'allowed_user_ids = ["@johndoe"]')),
                             "telegram.allowed_user_ids[0]", r"valid integer"),
    "token-check-zero": (edit(("token_check_seconds = 300", "token_check_seconds = 0")),
                         "telegram.token_check_seconds", r"greater than or equal to 1"),
    "proxy-port-only": (edit(('# proxy = "socks5://127.0.0.1:1080"', "proxy = 1080")), "telegram.proxy",
                        r"valid string"),
    "level-as-text": (edit(("alert_levels = [0.5]", 'alert_levels = [0.5, "x"]')), "telegram.alert_levels[1]",
                      r"valid number"),
    "busy-timeout-negative": (edit(("# busy_timeout_seconds = 30", "busy_timeout_seconds = -1")),
                              "storage.busy_timeout_seconds", r"greater than or equal to 0"),
    # ---- assets and baskets
    "name-with-space": (edit(('name = "BTC"', 'name = "BTC USD"')), "assets[0].name", r"should match pattern"),
    "asset-singular": (edit(('[[assets]]\nname = "BTC"', '[[asset]]\nname = "BTC"')), "asset", r"unknown key"),
    "table-typo": (edit(("[correlation]", "[correlations]")), "correlations", r"unknown key"),
    "fallback-not-a-list": (edit(('fallback_exchanges = ["kraken"]', 'fallback_exchanges = "kraken"')),
                            "assets[0].fallback_exchanges", r"valid list"),
    "asset-kind-missing": (edit(('name = "SOL"\nkind = "crypto"', 'name = "SOL"')), "assets[2].kind",
                           r"Field required"),
    "empty-basket": (edit(("members = { PSCT = 0.5, XSW = 0.5 }", "members = {}")), "baskets[1].members",
                     r"at least one member"),
    # ---- TOML itself: the line is named, and the key on it (never its value)
    "key-twice": (edit(('name = "ETH"', 'name = "ETH"\nname = "ETH2"')),
                  line_of(edit(('name = "ETH"', 'name = "ETH"\nname = "ETH2"')), 'name = "ETH2"'),
                  r"not valid TOML \(Cannot overwrite a value \(at (line \d+).*; \1 is 'name = …'$"),
    "unquoted-string": (edit(('exchange = "binance"', "exchange = binance")), line_of(EXAMPLE_TEXT, "exchange = "),
                        r"not valid TOML \(Invalid value \(at (line \d+).*; \1 is 'exchange = …'$"),
    "smart-quotes": (edit(('timezone = "UTC"', "timezone = “UTC”")), "timezone",
                     r"not valid TOML .*line \d+ is 'timezone = …'$"),
    "unclosed-table-header": (edit(("\n[schedule]\n", "\n[schedule\n")), "[schedule",
                              r"not valid TOML .*line \d+ is '\[schedule'$"),
    "secret-proxy-line": (edit(('# proxy = "socks5://127.0.0.1:1080"', 'proxy = "socks5://u:hunter2@h:1080')),
                          "proxy", r"not valid TOML .*line \d+ is 'proxy = …'$"),
}


def check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["--config", str(path), "check-config"])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line(rc: int, out: str, err: str) -> str:
    assert rc == 2, (rc, out, err)
    assert out == "", out
    assert err.startswith("corrbot: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.removeprefix("corrbot: ").rstrip("\n")


def test_the_list_is_long_enough() -> None:
    assert len(MISTAKES) >= 25


@pytest.mark.parametrize("case", list(MISTAKES))
def test_realistic_mistake(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, key, what = MISTAKES[case]
    path = tmp_path / "corrbot.toml"
    path.write_text(text, encoding="utf-8")
    line = assert_one_line(*check(capsys, path))
    assert key in line, line
    assert re.search(what, line), line
    assert "hunter2" not in line
    assert not (tmp_path / "corrbot.db").exists()


@pytest.mark.parametrize("case", ["kind-typo", "key-twice", "timezone-typo", "username-for-user-id"])
def test_mistakes_as_a_real_process(case: str, tmp_path: Path) -> None:
    """The installed console script (the front door systemd runs): exit 2, one line, no traceback."""
    text, key, what = MISTAKES[case]
    path = tmp_path / "corrbot.toml"
    path.write_text(text, encoding="utf-8")
    exe = Path(sys.executable).parent / "corrbot"
    entry = "import sys, service.entry; sys.exit(service.entry.main())"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-c", entry]
    r = subprocess.run([*argv, "--config", str(path), "check-config"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    line = assert_one_line(r.returncode, r.stdout, r.stderr)
    assert key in line and re.search(what, line), line


# ---- generated --------------------------------------------------------------------------------

ODD_TEXT = st.sampled_from([
    "", " ", "BTC ", "btc", "ＢＴＣ", "B\u200bTC", "\u202eBTC", "БТЦ", "🚀", "\\", "a\nb", "\t", "é",
    "1h", "2 hours", "-1h", "0", "6H", "999999w", "1e3", "nan", "QQQQ", "BTC/QQQQ", "BTC/IWM", "IWM/BTC", "BTC-IWM",
    "binanse", "kraken", "yahoo", "1d", "1w", "corr_levle", "stale", "UTC", "Mars/Olympus", "25:00", "08:30",
    "../../etc/passwd", "\x7f", "\u0000",
]) | st.integers(4000, 6000).map(lambda n: "x" * n)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, -1, 1, 2, 3, 5000, 5001, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1.0, 0.999, 1e308, -1e-308]),
)
SCALARS = st.one_of(NUMBERS, st.booleans(), ODD_TEXT, st.text(max_size=30))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)
KEYS = st.one_of(st.sampled_from(["name", "kind", "window", "pairs", "above", "after", "members", "ticker",
                                  "timeframe", "token", "windoes", "Name", "", " ", "kind ", "é", "🚀"]),
                 st.text(max_size=12))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """The example's data with 1-4 edits: set a value, delete a key, add a key, empty a container,
    or point a rule/basket/pair at a name that is not configured."""
    data = json.loads(json.dumps(EXAMPLE))  # a deep copy (the example has no dates or non-JSON values)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        top = draw(st.sampled_from(sorted(data)))  # each section as likely as the long [[assets]] list
        path = draw(st.sampled_from([(top,), *_paths(data[top], (top,))]))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        op = draw(st.sampled_from(["set", "set", "set", "delete", "add", "empty", "rename"]))
        if op == "set":
            parent[last] = draw(VALUES)
        elif op == "delete":
            del parent[last]
        elif op == "add" and isinstance(parent[last], dict):
            parent[last][draw(KEYS)] = draw(VALUES)
        elif op == "add" and isinstance(parent[last], list):
            parent[last].append(draw(VALUES))
        elif op == "empty" and isinstance(parent[last], dict | list):
            parent[last] = type(parent[last])()
        elif op == "rename" and isinstance(last, str):
            parent[draw(KEYS)] = parent.pop(last)
    return data


def _toml_str(s: str) -> str:
    # JSON's string escapes are TOML's, except that TOML also wants DEL escaped; astral
    # characters stay raw (a \\ud83d surrogate escape is not TOML).
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{_toml_str(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


def to_toml(data: dict[str, Any]) -> str:
    """Plain keys first, then [tables] and [[arrays of tables]] (nested tables inline)."""
    head, tail = [], []
    for k, v in data.items():
        key = _toml_str(k)
        if isinstance(v, dict):
            tail.append(f"[{key}]\n" + "".join(f"{_toml_str(a)} = {_toml_value(b)}\n" for a, b in v.items()))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                tail.append(f"[[{key}]]\n" + "".join(f"{_toml_str(a)} = {_toml_value(b)}\n" for a, b in item.items()))
        else:
            head.append(f"{key} = {_toml_value(v)}\n")
    return "".join(head) + "\n" + "\n".join(tail)


def test_serialiser_round_trips_the_example() -> None:
    assert tomllib.loads(to_toml(EXAMPLE)) == EXAMPLE


def _key_named(line: str, data: dict[str, Any]) -> None:
    """A data error names a key path, e.g. ``rules[2].pairs[0]: …`` whose first part is a
    top-level key of the file (a known one, or the unknown one it reports)."""
    part = r'(?:"(?:[^"\\]|\\.)*"|[^\s:.\["]+)'  # bare, or quoted as TOML quotes a key
    m = re.match(rf"({part})((?:\[\d+\]|\.{part})*): ", line)
    assert m, line
    assert "<class" not in line and not re.search(r"\w(Config|Rule)\b", line), line  # our class names mean nothing
    top = json.loads(m.group(1)) if m.group(1).startswith('"') else m.group(1)
    assert top in TOP_KEYS | {str(k) for k in data}, line


FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@FUZZ
@given(data=mutated())
def test_generated_configs(data: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "corrbot.toml"
    path.write_text(to_toml(data), encoding="utf-8")
    rc, out, err = check(capsys, path)
    event("accepted" if rc == 0 else "refused")
    if rc == 0:
        assert "pairs (" in out and "Traceback" not in err
        load_config(path)
        return
    line = assert_one_line(rc, out, err)
    _key_named(line, data)
    event(f"refused: {re.sub(r'[0-9]+', 'N', line.split(': ')[0])}")


LINE_EDITS = st.sampled_from(["delete", "duplicate", "replace-value", "insert", "truncate"])
JUNK = st.one_of(
    st.sampled_from(["[", "]", "[[", "=", "= 1", "x =", "x = ", '"', "'", "\"\"\"", "[assets]", "[[rules]]", "\x00",
                     "\ufeff", "\r", "name = 1", "a.b.c = 1", "[storage]", "kind = \"crypto\"", "#", "\\", "{", "}"]),
    st.text(max_size=20),
)


@FUZZ
@given(edits=st.lists(st.tuples(LINE_EDITS, st.integers(0, 10**6), JUNK), min_size=1, max_size=3))
def test_generated_texts(edits: list[tuple[str, int, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Line-level damage: the TOML may no longer parse (then the line and its key are named)."""
    lines = EXAMPLE_TEXT.splitlines()
    for op, at, junk in edits:
        i = at % len(lines)
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "replace-value" and "=" in lines[i]:
            lines[i] = lines[i].split("=", 1)[0] + "= " + junk
        elif op == "insert":
            lines.insert(i, junk)
        else:
            lines[i] = lines[i][: at % (len(lines[i]) + 1)]
    path = tmp_path / "corrbot.toml"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
    rc, out, err = check(capsys, path)
    event("accepted" if rc == 0 else "not TOML" if "not valid TOML" in err else "refused")
    if rc == 0:
        assert "pairs (" in out
        return
    line = assert_one_line(rc, out, err)
    if "not valid TOML" in line:
        assert re.search(r"at line \d+|at end of document", line), line
    else:
        _key_named(line, tomllib.loads(path.read_text(encoding="utf-8-sig")))
