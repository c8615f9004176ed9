"""Configuration: the TOML file, validated with pydantic, resolved into a watch list.

`load_config(path)` returns a `Config`; every problem becomes a `ConfigError` naming the
key (``assets[2].exchange: unknown ccxt exchange 'binanse' — did you mean binance?``).
The Telegram token is never read from the TOML: it comes from ``$CORRBOT_TELEGRAM_TOKEN``
or ``telegram.token_file`` (e.g. a systemd credential), see `telegram_token`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import ConfigError, UnknownAssetError
from core.rules import KINDS, MetricsConfig, RuleConfig, ScheduleConfig, StaleRule

Timeframe = Literal["1d", "1h"]
Kind = Literal["crypto", "equity"]
TIMEFRAMES: tuple[Timeframe, ...] = ("1d", "1h")
DEFAULT_PATH = "corrbot.toml"


class _Strict(BaseModel):
    # allow_inf_nan=False: `nan` is "should be a finite number", not "should be less than 1".
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StorageConfig(_Strict):
    path: Path = Path("corrbot.db")
    # How long a write waits for another process's lock before failing ("database … is busy").
    busy_timeout_seconds: Annotated[float, Field(ge=0.0, le=3600.0)] = 30.0


class AssetConfig(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9^._-]+$")]
    kind: Literal["crypto", "equity"]
    exchange: str | None = None  # crypto: any ccxt exchange id
    symbol: str | None = None  # crypto: the exchange's unified symbol, e.g. BTC/USDT
    fallback_exchanges: list[str] = Field(default_factory=list)
    ticker: str | None = None  # equity: any yfinance ticker, e.g. IWM or ^RUT
    # equity: "small" or "large" cap. Orders the /heatmap columns (small first) and groups /history's bars.
    cap: Literal["small", "large"] | None = None

    @property
    def key(self) -> str:
        return self.name.upper()


class BasketConfig(_Strict):
    """A synthetic asset: constant weights (normalised to sum 1), rebalanced every bar."""

    name: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9^._-]+$")]
    members: dict[str, float]

    @property
    def key(self) -> str:
        return self.name.upper()


class PairConfig(_Strict):
    a: str  # a crypto asset or basket
    b: list[str]  # equity assets or baskets


class CorrelationConfig(_Strict):
    timeframes: list[Timeframe] = Field(default_factory=lambda: list(TIMEFRAMES))
    windows: list[Annotated[int, Field(ge=3, le=5000)]] = Field(default_factory=lambda: [30, 90])
    # Optional per-timeframe override of `windows`, e.g. {"1h" = [35]}.
    timeframe_windows: dict[Timeframe, list[Annotated[int, Field(ge=3, le=5000)]]] = Field(default_factory=dict)
    ewma_lambda: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.94
    default_crypto: str | None = None
    default_benchmark: str | None = None
    default_window: int | None = None


class FeedsConfig(_Strict):
    crypto_bar: Literal["1h", "30m"] = "1h"  # candle size fetched for intraday sampling
    backfill_days: Annotated[int, Field(ge=1, le=20000)] = 730
    retries: Annotated[int, Field(ge=0, le=20)] = 4
    backoff_seconds: Annotated[float, Field(ge=0.0, le=600.0)] = 2.0
    timeout_seconds: Annotated[float, Field(gt=0.0, le=300.0)] = 30.0
    poll_minutes: Annotated[int, Field(ge=1, le=1440)] = 15
    # Loopback/self-hosted endpoints (tests, proxies). None = the library's default URL.
    yahoo_base_url: str | None = None
    ccxt_urls: dict[str, str] = Field(default_factory=dict)


_DEFAULT_MOVES: dict[Kind, float] = {"crypto": 1.5, "equity": 0.5}


class IntegrityConfig(_Strict):
    """Guards on every write of bars (imports and feeds), see service/guard.py."""

    # Largest plausible single-bar move per asset kind, as a simple-return fraction: 0.5 means
    # up to +50 % or down to −33 % (the same distance in log terms). Real extremes in our data:
    # crypto daily +73 % (ADA 2025-03-02), equities daily −13 % (IWM 2020-03-16).
    max_move: dict[Kind, Annotated[float, Field(gt=0.0, le=1000.0)]] = Field(
        default_factory=lambda: _DEFAULT_MOVES.copy())
    # A stored close may move by at most this fraction (after a detected re-adjustment) without
    # `import --replace`: vendors revise recent closes a little, never by whole percent.
    tolerance: Annotated[float, Field(ge=0.0, le=1.0)] = 0.001

    def move_limit(self, kind: str) -> float:
        for k, v in self.max_move.items():
            if k == kind:
                return v
        return _DEFAULT_MOVES["crypto" if kind == "crypto" else "equity"]


class TelegramConfig(_Strict):
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str | None = None
    proxy: str | None = None
    token_file: Path | None = None
    alert_chat_ids: list[int | str] = Field(default_factory=list)
    alert_thread_id: int | None = None
    allowed_user_ids: list[int] = Field(default_factory=list)
    allowed_chat_ids: list[int] = Field(default_factory=list)
    admin_user_ids: list[int] = Field(default_factory=list)
    alert_levels: list[float] = Field(default_factory=lambda: [0.5])
    # How often `run` asks getMe whether the token still works (a revoked token stops polling).
    token_check_seconds: Annotated[float, Field(ge=1.0, le=86400.0)] = 300.0
    # An alert that fires within this many NYSE sessions of an FOMC decision says so.
    fomc_sessions: Annotated[int, Field(ge=0, le=20)] = 3


class Config(_Strict):
    storage: StorageConfig = Field(default_factory=StorageConfig)
    assets: list[AssetConfig]
    baskets: list[BasketConfig] = Field(default_factory=list)
    pairs: list[PairConfig] = Field(default_factory=list)
    correlation: CorrelationConfig = Field(default_factory=CorrelationConfig)
    feeds: FeedsConfig = Field(default_factory=FeedsConfig)
    integrity: IntegrityConfig = Field(default_factory=IntegrityConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    rules: list[RuleConfig] = Field(default_factory=list)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @field_validator("assets")
    @classmethod
    def _nonempty(cls, v: list[AssetConfig]) -> list[AssetConfig]:
        if not v:
            raise ValueError("at least one asset is required")
        return v

    # ---- resolved views -------------------------------------------------------------

    @cached_property
    def asset_by_key(self) -> dict[str, AssetConfig]:
        return {a.key: a for a in self.assets}

    @cached_property
    def basket_by_key(self) -> dict[str, BasketConfig]:
        return {b.key: b for b in self.baskets}

    def kind_of(self, key: str) -> Literal["crypto", "equity"]:
        if key in self.asset_by_key:
            return self.asset_by_key[key].kind
        basket = self.basket_by_key[key]
        return self.asset_by_key[next(iter(basket.members)).upper()].kind

    def cap_of(self, key: str) -> str | None:
        """"small"/"large" for an equity asset; a basket whose members agree has theirs."""
        if key in self.asset_by_key:
            return self.asset_by_key[key].cap
        caps = {self.asset_by_key[m.upper()].cap for m in self.basket_by_key[key].members}
        return caps.pop() if len(caps) == 1 else None

    def by_cap(self, keys: list[str]) -> list[str]:
        """``keys`` with small caps first, unmarked next, large caps last (config order within)."""
        rank = {"small": 0, None: 1, "large": 2}
        return sorted(keys, key=lambda k: rank[self.cap_of(k)])

    @cached_property
    def names(self) -> list[str]:
        """Every watchable name (assets then baskets), upper-case, in config order."""
        return [a.key for a in self.assets] + [b.key for b in self.baskets]

    def resolve(self, name: str) -> str:
        """A user-typed name -> its canonical key; unknown names get close matches."""
        key = name.strip().upper()
        if key in self.asset_by_key or key in self.basket_by_key:
            return key
        if not key.startswith("^") and "^" + key in self.asset_by_key:
            return "^" + key  # people type RUT for ^RUT
        close = difflib.get_close_matches(key, self.names, n=3, cutoff=0.5)
        raise UnknownAssetError(name, close)

    @cached_property
    def pair_list(self) -> list[tuple[str, str]]:
        """(crypto, equity) pairs to watch: all combinations unless [[pairs]] narrows it."""
        if self.pairs:
            out: list[tuple[str, str]] = []
            for p in self.pairs:
                for b in p.b:
                    pair = (p.a.upper(), b.upper())
                    if pair not in out:
                        out.append(pair)
            return out
        crypto = [n for n in self.names if self.kind_of(n) == "crypto"]
        equity = [n for n in self.names if self.kind_of(n) == "equity"]
        return [(c, e) for c in crypto for e in equity]

    def windows_for(self, timeframe: str) -> list[int]:
        tw = self.correlation.timeframe_windows
        return sorted(tw[timeframe]) if timeframe in tw else sorted(self.correlation.windows)  # type: ignore[index]

    @property
    def default_crypto(self) -> str:
        return (self.correlation.default_crypto or self.pair_list[0][0]).upper()

    @property
    def default_benchmark(self) -> str:
        if self.correlation.default_benchmark:
            return self.correlation.default_benchmark.upper()
        return next(b for a, b in self.pair_list if a == self.default_crypto)

    def default_window(self, timeframe: str = "1d") -> int:
        w = self.correlation.default_window
        ws = self.windows_for(timeframe)
        return w if w is not None and w in ws else ws[0]

    def counterparts(self, key: str) -> list[str]:
        return [b for a, b in self.pair_list if a == key] + [a for a, b in self.pair_list if b == key]

    def rule_window(self, rule: RuleConfig) -> int:
        return rule.window if rule.window is not None else self.default_window(rule.timeframe)

    def rule_pairs(self, rule: RuleConfig) -> list[tuple[str, str]]:
        """The (crypto, equity) pairs a rule watches, in config order."""
        if rule.pairs is None:
            return list(self.pair_list)
        out = []
        for text in rule.pairs:
            a, b = (x.strip().upper() for x in text.split("/", 1))
            out.append((a, b) if (a, b) in self.pair_list else (b, a))
        return out

    @cached_property
    def sources(self) -> dict[str, list[str]]:
        """Feed source id (each exchange, and ``yahoo``) -> the assets it serves."""
        out: dict[str, list[str]] = {}
        for a in self.assets:
            ids = [a.exchange or "", *a.fallback_exchanges] if a.kind == "crypto" else ["yahoo"]
            for src in ids:
                out.setdefault(src, []).append(a.key)
        return out

    def telegram_token(self) -> str | None:
        """The bot token from $CORRBOT_TELEGRAM_TOKEN, telegram.token_file, or else the systemd
        credential ``telegram_token`` (``LoadCredential=``: $CREDENTIALS_DIRECTORY/telegram_token);
        None if there is none of them (console mode)."""
        tok = os.environ.get("CORRBOT_TELEGRAM_TOKEN", "").strip()
        if tok:
            return tok
        tf = self.telegram.token_file
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if tf is None and creds and (Path(creds) / "telegram_token").is_file():
            tf = Path(creds) / "telegram_token"
        if tf is not None:
            try:
                return tf.read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                raise ConfigError(f"cannot read token file ({exc.strerror})", "telegram.token_file") from None
            except UnicodeDecodeError:
                raise ConfigError("token file is not UTF-8 text", "telegram.token_file") from None
        return None


def _loc(loc: tuple[int | str, ...]) -> str:
    if len(loc) > 2 and loc[0] == "rules" and loc[2] in KINDS:
        loc = loc[:2] + loc[3:]  # pydantic names the union member ("corr_level"); users do not
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for "the key of this dict", not a key of ours
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{_key(part)}" if out else _key(part))
    return out


def _toml_type(value: object) -> str:
    """What the user wrote, in TOML's words."""
    kinds = ((bool, "true/false"), (int, "an integer"), (float, "a number"), (str, "a string"), (list, "an array"))
    return next((name for t, name in kinds if isinstance(value, t)), "a table")


def _key(part: str) -> str:
    """A key as TOML would write it: bare if it can be (``windows``), else quoted (``" "``, ``"a.b"``)."""
    return part if re.fullmatch(r"[A-Za-z0-9_^-]+", part) else json.dumps(part, ensure_ascii=False)


def _check_semantics(cfg: Config) -> None:
    import ccxt  # imported here: it is slow to import and only validation needs its id list

    seen: dict[str, str] = {}
    for i, a in enumerate(cfg.assets):
        where = f"assets[{i}]"
        if a.key in seen:
            raise ConfigError(f"duplicate name {a.name!r} (also {seen[a.key]})", f"{where}.name")
        seen[a.key] = where
        if a.kind == "crypto":
            for field in ("exchange", "symbol"):
                if not getattr(a, field):
                    raise ConfigError("required for a crypto asset", f"{where}.{field}")
            if a.ticker:
                raise ConfigError("only equity assets have a ticker", f"{where}.ticker")
            if a.cap:
                raise ConfigError("only equity assets have a cap (small or large)", f"{where}.cap")
            for j, ex in enumerate([a.exchange, *a.fallback_exchanges]):
                if ex not in ccxt.exchanges:
                    key = f"{where}.exchange" if j == 0 else f"{where}.fallback_exchanges[{j - 1}]"
                    near = difflib.get_close_matches(str(ex), ccxt.exchanges, n=1)
                    hint = f" — did you mean {near[0]}?" if near else ""
                    raise ConfigError(f"unknown ccxt exchange {ex!r}{hint}", key)
        else:
            if not a.ticker:
                raise ConfigError("required for an equity asset", f"{where}.ticker")
            if a.exchange or a.symbol or a.fallback_exchanges:
                raise ConfigError("equity assets take a ticker, not exchange/symbol", where)
    for i, b in enumerate(cfg.baskets):
        where = f"baskets[{i}]"
        if b.key in seen:
            raise ConfigError(f"duplicate name {b.name!r} (also {seen[b.key]})", f"{where}.name")
        seen[b.key] = where
        if not b.members:
            raise ConfigError("a basket needs at least one member", f"{where}.members")
        kinds = set()
        for m, w in b.members.items():
            if m.upper() not in cfg.asset_by_key:
                raise ConfigError(f"unknown basket member {m!r} (members must be assets)", f"{where}.members.{_key(m)}")
            if not w > 0:
                raise ConfigError(f"weight must be > 0, got {w}", f"{where}.members.{_key(m)}")
            kinds.add(cfg.asset_by_key[m.upper()].kind)
        if len(kinds) > 1:
            raise ConfigError("members mix crypto and equity assets", f"{where}.members")
    for i, p in enumerate(cfg.pairs):
        for name, key in [(p.a, f"pairs[{i}].a")] + [(b, f"pairs[{i}].b[{j}]") for j, b in enumerate(p.b)]:
            if name.upper() not in seen:
                near = difflib.get_close_matches(name.upper(), list(seen), n=1)
                hint = f" — did you mean {near[0]}?" if near else ""
                raise ConfigError(f"unknown asset {name!r}{hint}", key)
        if cfg.kind_of(p.a.upper()) != "crypto":
            raise ConfigError(f"{p.a!r} is not a crypto asset or basket", f"pairs[{i}].a")
        for j, bname in enumerate(p.b):
            if cfg.kind_of(bname.upper()) != "equity":
                raise ConfigError(f"{bname!r} is not an equity asset or basket", f"pairs[{i}].b[{j}]")
    if not cfg.pair_list:
        raise ConfigError("nothing to correlate: need at least one crypto and one equity asset", "assets")
    c = cfg.correlation
    if not c.timeframes:
        raise ConfigError("at least one timeframe is required", "correlation.timeframes")
    if len(set(c.windows)) != len(c.windows):
        raise ConfigError("duplicate window", "correlation.windows")
    for default, key, side in (
        (c.default_crypto, "default_crypto", "crypto"),
        (c.default_benchmark, "default_benchmark", "equity"),
    ):
        if default is not None and default.upper() not in seen:
            raise ConfigError(f"unknown asset {default!r}", f"correlation.{key}")
        if default is not None and cfg.kind_of(default.upper()) != side:
            raise ConfigError(f"{default!r} is not a {side} asset or basket", f"correlation.{key}")
    if c.default_crypto and c.default_benchmark:
        pair = (c.default_crypto.upper(), c.default_benchmark.upper())
        if pair not in cfg.pair_list:
            raise ConfigError(f"{pair[0]}/{pair[1]} is not a watched pair", "correlation.default_benchmark")
    if c.default_window is not None and c.default_window not in c.windows:
        raise ConfigError(f"{c.default_window} is not one of windows {c.windows}", "correlation.default_window")
    for tf, ws in c.timeframe_windows.items():
        if not ws:
            raise ConfigError("needs at least one window", f"correlation.timeframe_windows.{tf}")
    _check_rules(cfg)


def _check_rules(cfg: Config) -> None:
    names: dict[str, int] = {}
    for i, r in enumerate(cfg.rules):
        where = f"rules[{i}]"
        if r.name.lower() in names:
            raise ConfigError(f"duplicate rule name {r.name!r} (also rules[{names[r.name.lower()]}])", f"{where}.name")
        names[r.name.lower()] = i
        if r.timeframe not in cfg.correlation.timeframes:
            allowed = ", ".join(cfg.correlation.timeframes)
            raise ConfigError(f"timeframe {r.timeframe} is not configured (one of {allowed})", f"{where}.timeframe")
        windows = cfg.windows_for(r.timeframe)
        if r.window is not None and r.window not in windows:
            raise ConfigError(f"{r.window} is not one of the {r.timeframe} windows {windows}", f"{where}.window")
        for j, text in enumerate(r.pairs or []):
            parts = [x.strip().upper() for x in text.split("/")]
            if len(parts) != 2 or not all(parts):
                raise ConfigError(f"{text!r} is not a pair like \"BTC/IWM\"", f"{where}.pairs[{j}]")
            a, b = parts
            if (a, b) not in cfg.pair_list and (b, a) not in cfg.pair_list:
                raise ConfigError(f"{a}/{b} is not a watched pair", f"{where}.pairs[{j}]")
        if isinstance(r, StaleRule):
            for j, src in enumerate(r.sources or []):
                if src not in cfg.sources:
                    known = ", ".join(sorted(cfg.sources))
                    raise ConfigError(f"unknown source {src!r} (one of {known})", f"{where}.sources[{j}]")


def parse_config(data: dict[str, object]) -> Config:
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] in ("model_type", "model_attributes_type", "dict_type"):
            msg = f"should be a table, not {_toml_type(err['input'])}"  # pydantic names our class
        elif err["type"] == "path_type":
            msg = f"should be a file path (a string), not {_toml_type(err['input'])}"
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):  # a rule's kind
            loc += ("kind",)
            given = f"unknown kind {err['ctx']['tag']!r}" if err["type"] == "union_tag_invalid" else "required"
            msg = f"{given} (one of {', '.join(KINDS)})"
        raise ConfigError(msg, _loc(loc) or "config") from None
    _check_semantics(cfg)
    return cfg


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The config file to use: ``path``, else $CORRBOT_CONFIG, else ./corrbot.toml."""
    return Path(path or os.environ.get("CORRBOT_CONFIG") or DEFAULT_PATH)


def _toml_key(raw: bytes, error: str) -> str:
    """The key (or table header) on the line a TOML error points at, e.g. ``; line 25 is name = …``.
    Never the value: it may hold a secret (a proxy URL with a password)."""
    m = re.search(r"at line (\d+)", error)
    lines = raw.decode("utf-8-sig", "replace").splitlines()
    if m is None or not 0 < int(m.group(1)) <= len(lines):
        return ""
    line = lines[int(m.group(1)) - 1].strip()
    head = re.match(r"(\[+[^\]=]*\]*)|([^=]*?)\s*=", line)
    if head is None or not (head.group(1) or head.group(2)):
        return ""
    shown = head.group(1) or f"{head.group(2)} = …"
    return f"; line {m.group(1)} is {shown[:80]!r}"


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the TOML config at ``path`` (or $CORRBOT_CONFIG, or ./corrbot.toml)."""
    p = config_path(path)
    try:
        # Only regular files: reading a FIFO would block until someone writes to it.
        if not stat.S_ISREG(p.stat().st_mode):
            raise ConfigError(f"cannot read config file {p}: not a regular file (a directory, FIFO or device?)")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found (copy config.example.toml)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))  # -sig: a leading BOM (Notepad) is fine
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc}){_toml_key(raw, str(exc))}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{p}: not valid TOML (arrays or tables nested too deeply)") from None
    try:
        cfg = parse_config(data)
    except RecursionError:
        raise ConfigError(f"{p}: values nested too deeply") from None
    if not cfg.storage.path.is_absolute():
        # A relative DB path is relative to the config file, not to wherever we were started.
        storage = cfg.storage.model_copy(update={"path": p.parent / cfg.storage.path})
        cfg = cfg.model_copy(update={"storage": storage})
    return cfg


def readable_by_others(path: Path) -> str | None:
    """A warning if ``path`` (holding secrets) can be read by group or others, else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & 0o044:
        return f"{path} is readable by group/others (mode {stat.S_IMODE(mode):04o}) — run: chmod 600 {path}"
    return None
