"""The TOML config: the shipped example resolves as documented; every bad config is a one-line
ConfigError naming the key (and `corrbot check-config` turns it into exit 2, no traceback);
the Telegram token never comes from the TOML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

from core.config import load_config
from core.errors import ConfigError, UnknownAssetError
from service.cli import main

EXAMPLE = REPO / "config.example.toml"

# A small valid config; the bad ones below are edits of it.
BASE = """
[storage]
path = "x.db"

[[assets]]
name = "BTC"
kind = "crypto"
exchange = "binance"
symbol = "BTC/USDT"

[[assets]]
name = "ETH"
kind = "crypto"
exchange = "binance"
symbol = "ETH/USDT"

[[assets]]
name = "IWM"
kind = "equity"
ticker = "IWM"

[[assets]]
name = "PSCT"
kind = "equity"
ticker = "PSCT"

[[baskets]]
name = "MIX"
members = { IWM = 0.5, PSCT = 0.5 }

[correlation]
windows = [30, 90]
default_window = 30
"""


def _write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ---- the shipped example ---------------------------------------------------------------------


def test_example_config_resolves() -> None:
    cfg = load_config(EXAMPLE)
    crypto = [a.key for a in cfg.assets if a.kind == "crypto"]
    equity = [a.key for a in cfg.assets if a.kind == "equity"]
    assert crypto == ["BTC", "ETH", "SOL", "ADA"]
    # 8 equity assets; with the SMALLCAP_TECH basket, 9 names on the equity side.
    assert equity == ["IWM", "PSCT", "IWO", "XSW", "^RUT", "QQQ", "SPY", "XLK"]
    assert [b.key for b in cfg.baskets] == ["ALTS", "SMALLCAP_TECH"]
    crypto_side = {a for a, _ in cfg.pair_list}
    equity_side = {b for _, b in cfg.pair_list}
    assert crypto_side == {"BTC", "ETH", "SOL", "ADA", "ALTS"}
    assert equity_side == set(equity) | {"SMALLCAP_TECH"}
    assert len(cfg.pair_list) == len(set(cfg.pair_list)) == 45
    assert cfg.kind_of("ALTS") == "crypto" and cfg.kind_of("SMALLCAP_TECH") == "equity"
    assert cfg.counterparts("BTC") == [*equity, "SMALLCAP_TECH"]


def test_example_config_name_resolution_and_defaults() -> None:
    cfg = load_config(EXAMPLE)
    for typed in ("rut", "RUT", "^rut", "^RUT", " Rut "):
        assert cfg.resolve(typed) == "^RUT"
    assert cfg.resolve("smallcap_tech") == "SMALLCAP_TECH"
    assert cfg.resolve("btc") == "BTC"
    with pytest.raises(UnknownAssetError) as ei:
        cfg.resolve("BTX")
    assert "BTC" in ei.value.suggestions
    assert cfg.default_crypto == "BTC"
    assert cfg.default_benchmark == "SMALLCAP_TECH"
    assert cfg.default_window() == 30 and cfg.default_window("1h") == 30
    assert cfg.windows_for("1d") == [30, 90]
    assert cfg.correlation.timeframes == ["1d", "1h"]
    assert cfg.correlation.ewma_lambda == 0.94
    assert cfg.feeds.crypto_bar == "1h" and cfg.feeds.backfill_days == 730
    assert cfg.telegram.token_file is None and cfg.telegram.alert_levels == [0.5]
    # A relative storage path is relative to the config file, not the working directory.
    assert cfg.storage.path == REPO / "corrbot.db"
    btc = cfg.asset_by_key["BTC"]
    assert (btc.exchange, btc.symbol, btc.fallback_exchanges) == ("binance", "BTC/USDT", ["kraken"])


def test_base_config_is_valid(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.pair_list == [(c, e) for c in ("BTC", "ETH") for e in ("IWM", "PSCT", "MIX")]
    assert cfg.storage.path == tmp_path / "x.db"


# ---- bad configs ---------------------------------------------------------------------------

ETH_BLOCK = 'name = "ETH"\nkind = "crypto"\nexchange = "binance"\nsymbol = "ETH/USDT"'
IWM_BLOCK = 'name = "IWM"\nkind = "equity"\nticker = "IWM"'

# id -> (config text, key the message must name, regex for what is wrong)
BAD: dict[str, tuple[str, str, str]] = {
    "unknown-exchange": (
        BASE.replace('exchange = "binance"', 'exchange = "binanse"', 1),
        "assets[0].exchange", r"unknown ccxt exchange 'binanse'.*did you mean binance",
    ),
    "unknown-fallback-exchange": (
        BASE.replace('symbol = "BTC/USDT"', 'symbol = "BTC/USDT"\nfallback_exchanges = ["krakn"]'),
        "assets[0].fallback_exchanges[0]", r"unknown ccxt exchange 'krakn'.*did you mean kraken",
    ),
    "unknown-basket-member": (
        BASE.replace("{ IWM = 0.5, PSCT = 0.5 }", "{ IWM = 0.5, PSCX = 0.5 }"),
        "baskets[0].members.PSCX", r"unknown basket member 'PSCX'",
    ),
    "zero-weight": (
        BASE.replace("{ IWM = 0.5, PSCT = 0.5 }", "{ IWM = 0.5, PSCT = 0 }"),
        "baskets[0].members.PSCT", r"weight must be > 0, got 0",
    ),
    "negative-weight": (
        BASE.replace("{ IWM = 0.5, PSCT = 0.5 }", "{ IWM = -0.5, PSCT = 1.5 }"),
        "baskets[0].members.IWM", r"weight must be > 0, got -0\.5",
    ),
    "duplicate-asset-name-case-insensitive": (
        BASE.replace(ETH_BLOCK, ETH_BLOCK.replace('"ETH"', '"btc"', 1)),
        "assets[1].name", r"duplicate name 'btc' \(also assets\[0\]\)",
    ),
    "basket-named-like-asset": (
        BASE.replace('name = "MIX"', 'name = "iwm"'),
        "baskets[0].name", r"duplicate name 'iwm' \(also assets\[2\]\)",
    ),
    "crypto-without-symbol": (
        BASE.replace('symbol = "ETH/USDT"\n', ""),
        "assets[1].symbol", r"required for a crypto asset",
    ),
    "equity-without-ticker": (
        BASE.replace(IWM_BLOCK, IWM_BLOCK.replace('ticker = "IWM"', "")),
        "assets[2].ticker", r"required for an equity asset",
    ),
    "mixed-basket": (
        BASE.replace("{ IWM = 0.5, PSCT = 0.5 }", "{ IWM = 0.5, BTC = 0.5 }"),
        "baskets[0].members", r"members mix crypto and equity",
    ),
    "unknown-key-typo": (
        BASE.replace("windows = [30, 90]", "windos = [30, 90]"),
        "correlation.windos", r"unknown key",
    ),
    "window-below-3": (
        BASE.replace("windows = [30, 90]", "windows = [2, 30]"),
        "correlation.windows[0]", r"greater than or equal to 3",
    ),
    "invalid-toml": (
        BASE.replace('ticker = "IWM"', 'ticker = "IWM'),
        "c.toml", r"not valid TOML.*line \d+",
    ),
    "pairs-unknown-asset": (
        BASE + '\n[[pairs]]\na = "BTC"\nb = ["IWM", "QQQ"]\n',
        "pairs[0].b[1]", r"unknown asset 'QQQ'",
    ),
    "pairs-unknown-a": (
        BASE + '\n[[pairs]]\na = "ETX"\nb = ["IWM"]\n',
        "pairs[0].a", r"unknown asset 'ETX'.*did you mean ETH",
    ),
    "pairs-equity-on-a-side": (
        BASE + '\n[[pairs]]\na = "IWM"\nb = ["PSCT"]\n',
        "pairs[0].a", r"'IWM' is not a crypto asset or basket",
    ),
    "pairs-crypto-on-b-side": (
        BASE + '\n[[pairs]]\na = "BTC"\nb = ["IWM", "ETH"]\n',
        "pairs[0].b[1]", r"'ETH' is not an equity asset or basket",
    ),
    "default-window-not-in-windows": (
        BASE.replace("default_window = 30", "default_window = 45"),
        "correlation.default_window", r"45 is not one of windows \[30, 90\]",
    ),
    "token-in-toml": (
        BASE + '\n[telegram]\ntoken = "123456:SECRET-TOKEN-VALUE"\n',
        "telegram.token", r"unknown key",
    ),
    "equity-with-exchange": (
        BASE.replace(IWM_BLOCK, IWM_BLOCK + '\nexchange = "binance"'),
        "assets[2]", r"equity assets take a ticker",
    ),
    "unknown-kind": (
        BASE.replace('kind = "equity"', 'kind = "stock"', 1),
        "assets[2].kind", r"'crypto' or 'equity'",
    ),
    "no-assets": (
        'assets = []\n[storage]\npath = "x.db"\n', "assets", r"at least one asset",
    ),
    "nothing-to-correlate": (
        '[[assets]]\nname = "BTC"\nkind = "crypto"\nexchange = "binance"\nsymbol = "BTC/USDT"\n',
        "assets", r"nothing to correlate",
    ),
}


def _assert_one_line_cli_error(capsys: pytest.CaptureFixture[str], path: Path, *needles: str) -> str:
    capsys.readouterr()
    assert main(["--config", str(path), "check-config"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("corrbot: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in err
    return err


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_is_a_config_error_naming_the_key(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, key, what = BAD[case]
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    msg = str(ei.value)
    assert key in msg, msg
    assert re.search(what, msg), msg
    assert "\n" not in msg
    assert "SECRET" not in msg
    err = _assert_one_line_cli_error(capsys, path, key)
    assert err == f"corrbot: {msg}\n"
    assert not (tmp_path / "x.db").exists()


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml not found"):
        load_config(path)
    _assert_one_line_cli_error(capsys, path, "nope.toml", "not found")


def test_config_path_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)
    _assert_one_line_cli_error(capsys, tmp_path, "cannot read config file")


def test_non_utf8_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(BASE.encode() + '\n# caf\xe9\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml: not valid TOML.*utf-8"):
        load_config(path)
    _assert_one_line_cli_error(capsys, path, "latin1.toml", "not valid TOML")


def test_config_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, BASE)
    monkeypatch.setenv("CORRBOT_CONFIG", str(path))
    assert load_config().storage.path == tmp_path / "x.db"


# ---- the Telegram token --------------------------------------------------------------------


@pytest.fixture
def no_env_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRBOT_TELEGRAM_TOKEN", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def _with_token_file(tmp_path: Path, token_file: Path) -> Path:
    return _write(tmp_path, BASE + f"\n[telegram]\ntoken_file = {str(token_file)!r}\n")


def test_no_token_anywhere(tmp_path: Path, no_env_token: None) -> None:
    assert load_config(_write(tmp_path, BASE)).telegram_token() is None


def test_env_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRBOT_TELEGRAM_TOKEN", "  111:from-env \n")
    assert load_config(_write(tmp_path, BASE)).telegram_token() == "111:from-env"


def test_token_file_read_and_stripped(tmp_path: Path, no_env_token: None) -> None:
    tf = tmp_path / "telegram_token"
    tf.write_text("\n  222:from-file  \n", encoding="utf-8")
    assert load_config(_with_token_file(tmp_path, tf)).telegram_token() == "222:from-file"
    tf.write_text("   \n", encoding="utf-8")
    assert load_config(_with_token_file(tmp_path, tf)).telegram_token() is None


def test_env_token_wins_over_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tf = tmp_path / "telegram_token"
    tf.write_text("222:from-file\n", encoding="utf-8")
    monkeypatch.setenv("CORRBOT_TELEGRAM_TOKEN", "111:from-env")
    assert load_config(_with_token_file(tmp_path, tf)).telegram_token() == "111:from-env"
    monkeypatch.setenv("CORRBOT_TELEGRAM_TOKEN", "  ")  # blank env: falls back to the file
    assert load_config(_with_token_file(tmp_path, tf)).telegram_token() == "222:from-file"


def test_systemd_credential_is_the_last_resort(
    tmp_path: Path, no_env_token: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LoadCredential=telegram_token:… puts it in $CREDENTIALS_DIRECTORY (see deploy/)."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_config(_write(tmp_path, BASE)).telegram_token() is None  # a directory without it
    (creds / "telegram_token").write_text("333:from-credential\n", encoding="utf-8")
    assert load_config(_write(tmp_path, BASE)).telegram_token() == "333:from-credential"
    tf = tmp_path / "telegram_token"
    tf.write_text("222:from-file\n", encoding="utf-8")
    assert load_config(_with_token_file(tmp_path, tf)).telegram_token() == "222:from-file"
    monkeypatch.setenv("CORRBOT_TELEGRAM_TOKEN", "111:from-env")
    assert load_config(_write(tmp_path, BASE)).telegram_token() == "111:from-env"


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_token_file(tmp_path: Path, no_env_token: None, kind: str) -> None:
    tf = tmp_path / ("missing_token" if kind == "missing" else "token_dir")
    if kind == "directory":
        tf.mkdir()
    cfg = load_config(_with_token_file(tmp_path, tf))  # loading alone does not read it
    with pytest.raises(ConfigError) as ei:
        cfg.telegram_token()
    assert ei.value.key == "telegram.token_file"
    assert str(ei.value).startswith("telegram.token_file: cannot read token file")
    assert "\n" not in str(ei.value)


def test_non_utf8_token_file_is_config_error(tmp_path: Path, no_env_token: None) -> None:
    tf = tmp_path / "telegram_token"
    tf.write_bytes(b"333:S\xffCRET\n")
    cfg = load_config(_with_token_file(tmp_path, tf))
    with pytest.raises(ConfigError) as ei:
        cfg.telegram_token()
    assert ei.value.key == "telegram.token_file"
    assert "CRET" not in str(ei.value)


# ---- check-config --------------------------------------------------------------------------


def test_check_config_prints_the_watch_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(EXAMPLE), "check-config"]) == 0
    out, err = capsys.readouterr()
    # At most the warning that a checkout's 0644 config is readable by others (tests/test_ops_failures.py).
    assert err in ("", f"corrbot: warning: config file {EXAMPLE} is readable by group/others (mode 0644) "
                   f"— run: chmod 600 {EXAMPLE}\n"), err
    cfg = load_config(EXAMPLE)
    for name in cfg.names:
        assert re.search(rf"^\s+{re.escape(name)}\s", out, re.M), name
    assert "pairs (45):" in out
    assert "kraken" in out  # the fallback exchange is shown
    assert re.search(r"^\s+SMALLCAP_TECH\s+basket\s+PSCT 50%, XSW 50%", out, re.M)
    assert re.search(r"^\s+ALTS\s+basket\s+ETH 50%, SOL 25%, ADA 25%", out, re.M)
    assert "defaults: BTC vs SMALLCAP_TECH, window 30" in out
    assert f"storage: {REPO / 'corrbot.db'}" in out


def test_check_config_with_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, BASE + '\n[[pairs]]\na = "eth"\nb = ["MIX", "iwm", "MIX"]\n')
    assert main(["--config", str(path), "check-config"]) == 0
    out = capsys.readouterr().out
    assert "pairs (2):" in out
    assert re.search(r"^\s+ETH\s+× MIX, IWM$", out, re.M)
    assert load_config(path).pair_list == [("ETH", "MIX"), ("ETH", "IWM")]


def test_default_crypto_must_be_crypto(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, BASE.replace("default_window = 30", 'default_crypto = "IWM"'))
    _assert_one_line_cli_error(capsys, path, "correlation.default_crypto")


def test_default_benchmark_must_be_equity(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("default_window = 30", 'default_benchmark = "ETH"'))
    with pytest.raises(ConfigError, match=r"correlation\.default_benchmark"):
        load_config(path)


def test_a_time_zone_too_long_for_a_file_name_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Found by tests/test_config_fuzz.py: ZoneInfo raised OSError (File name too long).
    cfg = tmp_path / "corrbot.toml"
    text = (REPO / "config.example.toml").read_text()
    assert 'timezone = "UTC"' in text
    cfg.write_text(text.replace('timezone = "UTC"', f'timezone = "{"x" * 5000}"', 1))
    assert main(["--config", str(cfg), "check-config"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("corrbot: schedule.timezone: unknown time zone 'xxxx"), err
    assert len(err[0]) < 200
