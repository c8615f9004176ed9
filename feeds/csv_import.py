"""CSV import of bar files (`corrbot import ASSET FILE`): layout detection, validation, upsert.

Recognised layouts (column names case-insensitive, comma-delimited, UTF-8 with optional BOM):

    yahoo           classic Yahoo download, ``Date,Open,High,Low,Close,Adj Close,Volume``
                    (extra columns such as ``Dividends,Stock Splits`` are ignored)
    yfinance        single-header ``to_csv`` of yfinance: ``Date``/``Datetime`` + any of OHLCV
    yfinance-multi  yfinance ≥0.2.51 three header lines (``Price,…`` / ``Ticker,…`` / ``Date,,…``)
    binance         kline dumps with ``symbol,interval,timestamp,open,…`` (timestamp = bar open)
    ohlcv           ``timestamp,open,high,low,close,volume`` (tz-aware strings or epoch numbers)
    ccxt            headerless ``fetch_ohlcv`` dumps: epoch (s/ms/µs/ns), open, high, low,
                    close[, volume]

Prices are stored as given, except when an ``Adj Close`` column exists: then close = Adj Close
and open/high/low are multiplied by Adj Close / Close so the whole bar is on one adjusted
scale (volume is left as is). Daily rows are keyed by their calendar date in the timestamp's
own timezone, at 00:00 UTC of that date; intraday rows by the UTC epoch of the bar open.

Rows whose price fields are empty or a null token (``null``, ``NaN``, ``N/A``…) are skipped
and reported with their line; blank lines are ignored. Everything else that is wrong —
duplicates, unsorted rows, non-positive or non-numeric prices, unparseable timestamps — is an
`ImportFileError` naming the physical line (header = line 1), raised before anything is written.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlite_utils

from feeds.base import TIMEFRAME_SECONDS
from service.config import Config
from service.errors import BadWindowError, ImportFileError, UserInputError
from storage.bars import upsert_bars

# Tokens read as "no value". Explicit (keep_default_na=False) so that anything else that is not
# a number is an error, not a silent skip.
MISSING_TOKENS = ["", "null", "NULL", "Null", "NaN", "nan", "NA", "N/A", "n/a", "None", "none"]
PRICE_ROLES = ("open", "high", "low", "close", "adj_close")
_TIME_NAMES = ("date", "datetime", "timestamp", "time", "open_time", "ts")
_ROLES = {"open", "high", "low", "close", "adj_close", "volume", "interval"}
_INTERVALS = {
    "1d": "1d",
    "1day": "1d",
    "d": "1d",
    "24h": "1d",
    "1h": "1h",
    "60m": "1h",
    "60min": "1h",
    "1hour": "1h",
    "30m": "30m",
    "30min": "30m",
}
_SNIFF_BYTES = 64 * 1024
_NEAR_DAY = 23 * 3600  # daily rows are ≥ 23 h apart even across a DST change
_OFFSET_RE = r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:Z|[+-]\d{2}:?\d{2})$"
_NUMBER_OR_DATE = re.compile(r"^\s*(-?\d+(\.\d+)?|\d{4}-\d{2}-\d{2}.*)\s*$")


@dataclass(frozen=True)
class ImportReport:
    asset: str  # canonical key the bars were stored under
    timeframe: str  # '1d', '1h' or '30m'
    layout: str  # short layout name, see the module docstring
    rows_read: int  # data rows in the file (blank lines excluded, skipped/dropped rows included)
    inserted: int
    updated: int
    unchanged: int
    skipped: list[tuple[int, str]]  # (physical line, reason)
    first_ts: int
    last_ts: int


@dataclass(frozen=True)
class ParsedCsv:
    """A validated file: ``bars`` follows the feeds/base.py bar-frame convention."""

    bars: pd.DataFrame
    timeframe: str
    layout: str
    rows_read: int
    skipped: list[tuple[int, str]]


@dataclass(frozen=True)
class _Layout:
    name: str
    header_lines: int
    cols: dict[str, int]  # role ("time", "close", …) -> column position


def import_csv(
    db: sqlite_utils.Database,
    cfg: Config,
    asset: str,
    path: str | Path,
    *,
    drop_last: bool = False,
    timeframe: str | None = None,
) -> ImportReport:
    """Import the bar file at ``path`` for ``asset``: validate it whole, then one upsert."""
    key = cfg.resolve(asset)
    if key in cfg.basket_by_key:
        raise UserInputError(f"{key} is a basket: baskets are computed from members, not imported")
    parsed = parse_csv(path, drop_last=drop_last, timeframe=timeframe)
    res = upsert_bars(db, key, parsed.timeframe, parsed.bars, f"csv:{Path(path).name}")
    idx = parsed.bars.index
    return ImportReport(
        key,
        parsed.timeframe,
        parsed.layout,
        parsed.rows_read,
        res.inserted,
        res.updated,
        res.unchanged,
        parsed.skipped,
        int(idx[0]),
        int(idx[-1]),
    )


def parse_csv(
    path: str | Path, *, drop_last: bool = False, timeframe: str | None = None
) -> ParsedCsv:
    """Read and validate a bar file without touching any database (see module docstring)."""
    if timeframe is not None and timeframe not in TIMEFRAME_SECONDS:
        raise BadWindowError(f"timeframe {timeframe!r} cannot be imported: use 1d, 1h or 30m")
    shown = str(path)
    layout = _sniff(Path(path), shown)
    raw = _read(Path(path), shown, layout)
    lines = np.arange(len(raw), dtype=np.int64) + layout.header_lines + 1
    nonblank = raw.notna().any(axis=1).to_numpy()
    raw, lines = raw.loc[nonblank].reset_index(drop=True), lines[nonblank]
    if raw.empty:
        raise ImportFileError(shown, "no data rows (header only)")
    rows_read = len(raw)
    if drop_last:
        raw, lines = raw.iloc[:-1], lines[:-1]
        if raw.empty:
            raise ImportFileError(shown, "no data rows left after dropping the last one")
    col = {role: raw[pos] for role, pos in layout.cols.items()}

    utc, tstr = _parse_times(col["time"], lines, shown)
    prices = {r: _numeric(col[r], r, lines, shown) for r in PRICE_ROLES if r in col}
    for role, values in prices.items():
        bad = np.flatnonzero(values <= 0)
        if bad.size:
            i = bad[0]
            raise ImportFileError(
                shown, f"non-positive {_label(role)} {values[i]!r}", int(lines[i])
            )
    volume = _numeric(col["volume"], "volume", lines, shown) if "volume" in col else None
    if volume is not None and (neg := np.flatnonzero(volume < 0)).size:
        raise ImportFileError(shown, f"negative volume {volume[neg[0]]!r}", int(lines[neg[0]]))

    _check_increasing(utc, lines, shown)
    tf = timeframe or (_interval(col["interval"], lines, shown) if "interval" in col else None)
    wall: np.ndarray | None = None
    if tf is None:
        tf, wall = _infer_timeframe(utc, tstr, lines, shown)
    if tf == "1d":
        wall = _wall_clock(utc, tstr) if wall is None else wall
        ts = wall - wall % 86400
        _check_increasing(ts, lines, shown)
    else:
        ts = utc
        step = np.diff(ts)
        if (short := np.flatnonzero(step < TIMEFRAME_SECONDS[tf])).size:
            i = short[0]
            raise ImportFileError(
                shown,
                f"bars on lines {lines[i]} and {lines[i + 1]} are {step[i]} s apart, "
                f"less than one {tf} bar",
                int(lines[i + 1]),
            )

    missing = np.column_stack([np.isnan(v) for v in prices.values()])
    skip = missing.any(axis=1)
    names = list(prices)
    skipped = [
        (
            int(lines[i]),
            "missing " + ", ".join(_label(names[j]) for j in np.flatnonzero(missing[i])),
        )
        for i in np.flatnonzero(skip)
    ]
    keep = ~skip
    if not keep.any():
        raise ImportFileError(
            shown, f"no usable rows: all {skip.size} data rows have missing prices"
        )
    close = prices.get("close")
    adj = prices.get("adj_close")
    out: dict[str, np.ndarray] = {}
    factor = adj / close if adj is not None and close is not None else None
    for role in ("open", "high", "low"):
        if role in prices:
            out[role] = prices[role] * factor if factor is not None else prices[role]
    out["close"] = adj if adj is not None else prices["close"]
    if volume is not None:
        out["volume"] = volume
    bars = pd.DataFrame(
        {k: v[keep] for k, v in out.items()}, index=pd.Index(ts[keep], name="ts", dtype="int64")
    )
    return ParsedCsv(bars, tf, layout.name, rows_read, skipped)


def _label(role: str) -> str:
    return "adj close" if role == "adj_close" else role


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", "_", name.strip().strip('"').strip().lower())


def _fields(line: str) -> list[str]:
    return [_norm(f) for f in line.rstrip("\r").split(",")]


def _sniff(path: Path, shown: str) -> _Layout:
    """Decide the layout from the first lines; the only place that reads raw bytes."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except FileNotFoundError:
        raise ImportFileError(shown, "no such file") from None
    except IsADirectoryError:
        raise ImportFileError(shown, "is a directory, not a CSV file") from None
    except OSError as exc:
        raise ImportFileError(shown, f"cannot read file ({exc.strerror})") from None
    if b"\x00" in head:
        raise ImportFileError(shown, "binary file, not a CSV (contains NUL bytes)")
    try:
        # Incremental, so a multi-byte character cut at the sniff boundary is not an error.
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            shown, f"not UTF-8 text (undecodable byte at offset {exc.start})"
        ) from None
    if not text.strip():
        raise ImportFileError(shown, "file is empty")
    lines = text.split("\n")
    first = _fields(lines[0])
    if first[0] == "price":
        if (
            len(lines) < 4
            or _fields(lines[1])[0] != "ticker"
            or _fields(lines[2])[0] not in _TIME_NAMES
            or any(_fields(lines[2])[1:])
        ):
            raise ImportFileError(
                shown,
                "incomplete yfinance multi-line header (expected Price / Ticker / Date lines)",
                1,
            )
        tickers = sorted({f.upper() for f in _fields(lines[1])[1:] if f})
        if len(tickers) > 1:
            raise ImportFileError(
                shown, f"holds several tickers ({', '.join(tickers)}): save one ticker per file", 2
            )
        return _named(shown, "yfinance-multi", 3, [_fields(lines[2])[0], *first[1:]], lines[0])
    if _NUMBER_OR_DATE.match(lines[0].split(",")[0].lstrip("\ufeff")):
        if len(first) < 5:
            raise ImportFileError(
                shown,
                f"headerless file with {len(first)} columns: need "
                "timestamp, open, high, low, close[, volume]",
                1,
            )
        roles = ["time", "open", "high", "low", "close", "volume"][: len(first)]
        return _Layout("ccxt", 0, {r: i for i, r in enumerate(roles)})
    layout = "binance" if "interval" in first or "symbol" in first else None
    return _named(shown, layout, 1, first, lines[0])


def _named(shown: str, name: str | None, header_lines: int, names: list[str], raw: str) -> _Layout:
    cols: dict[str, int] = {}
    for pos, n in enumerate(names):
        role = (
            "time"
            if n in _TIME_NAMES and "time" not in cols
            else n.replace("adjclose", "adj_close")
        )
        if role in _ROLES or role == "time":
            if role in cols:
                raise ImportFileError(
                    shown, f"column {n!r} appears twice in the header", header_lines
                )
            cols[role] = pos
    if "time" not in cols or not ({"close", "adj_close"} & cols.keys()):
        head = raw.strip()[:80]
        raise ImportFileError(
            shown,
            f"unrecognised header {head!r}: need a Date/Datetime/timestamp "
            "column and a Close column",
            1,
        )
    if name is None:
        if names[cols["time"]] in ("date", "datetime"):
            name = "yahoo" if "adj_close" in cols else "yfinance"
        else:
            name = "ohlcv"
    return _Layout(name, header_lines, cols)


def _read(path: Path, shown: str, layout: _Layout) -> pd.DataFrame:
    try:
        return pd.read_csv(
            path,
            header=None,
            skiprows=layout.header_lines,
            usecols=sorted(layout.cols.values()),
            skip_blank_lines=False,
            keep_default_na=False,
            na_values=MISSING_TOKENS,
            encoding="utf-8-sig",
            low_memory=False,
        )
    except pd.errors.EmptyDataError:
        raise ImportFileError(shown, "no data rows (header only)") from None
    except UnicodeDecodeError as exc:
        raise ImportFileError(shown, f"not UTF-8 text ({exc.reason})") from None
    except (pd.errors.ParserError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ImportFileError(shown, f"cannot parse as CSV: {msg}") from None


def _numeric(col: pd.Series, role: str, lines: np.ndarray, shown: str) -> np.ndarray:
    """Float values; missing tokens become NaN, anything else non-numeric is an error."""
    if pd.api.types.is_numeric_dtype(col.dtype):
        values = col.to_numpy(dtype="float64")
        bad = np.isinf(values)
    else:
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64")
        bad = (col.notna().to_numpy() & np.isnan(values)) | np.isinf(values)
    if (where := np.flatnonzero(bad)).size:
        i = where[0]
        raise ImportFileError(
            shown, f"non-numeric {_label(role)} {str(col.iloc[i])!r}", int(lines[i])
        )
    return values


def _parse_times(
    col: pd.Series, lines: np.ndarray, shown: str
) -> tuple[np.ndarray, pd.Series | None]:
    """UTC epoch seconds per row, plus the strings (None for numeric epochs) for wall clocks."""
    if (gone := np.flatnonzero(col.isna().to_numpy())).size:
        raise ImportFileError(shown, "missing timestamp", int(lines[gone[0]]))
    first = str(col.iloc[0]).strip()
    if pd.api.types.is_numeric_dtype(col.dtype) or re.fullmatch(r"-?\d+(\.\d+)?", first):
        num = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64")
        if (bad := np.flatnonzero(np.isnan(num))).size:
            i = bad[0]
            raise ImportFileError(
                shown, f"unparseable timestamp {str(col.iloc[i])!r}", int(lines[i])
            )
        # The unit follows from the magnitude: seconds until 5138 AD, then ms, µs, ns.
        big = float(np.abs(num).max())
        div = 1e9 if big >= 1e17 else 1e6 if big >= 1e14 else 1e3 if big >= 1e11 else 1.0
        return np.floor(num / div).astype("int64"), None
    text = col.astype(str)
    dt = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    if (bad := np.flatnonzero(dt.isna().to_numpy())).size:
        i = bad[0]
        raise ImportFileError(shown, f"unparseable timestamp {text.iloc[i]!r}", int(lines[i]))
    return _seconds(dt), text


def _seconds(dt: pd.Series) -> np.ndarray:
    epoch = pd.Timestamp(0, tz="UTC") if getattr(dt.dt, "tz", None) is not None else pd.Timestamp(0)
    return ((dt - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype="int64")


def _wall_clock(utc: np.ndarray, text: pd.Series | None) -> np.ndarray:
    """Epoch seconds of each row's local wall-clock time (its own offset dropped)."""
    if text is None:
        return utc
    naive = text.str.replace(_OFFSET_RE, r"\1", regex=True)
    return _seconds(pd.to_datetime(naive, format="ISO8601"))


def _infer_timeframe(
    utc: np.ndarray, text: pd.Series | None, lines: np.ndarray, shown: str
) -> tuple[str, np.ndarray | None]:
    step = np.diff(utc)
    wall = None
    # Only files whose rows are a day apart can be daily: skip the wall-clock work otherwise.
    if step.size == 0 or step.min() >= _NEAR_DAY:
        wall = _wall_clock(utc, text)
        if not (wall % 86400).any():
            return "1d", wall
    if step.size == 0:
        raise ImportFileError(
            shown, "one intraday row: cannot tell its timeframe, pass one", int(lines[0])
        )
    values, counts = np.unique(step, return_counts=True)
    mode = int(values[counts.argmax()])
    by_step = {s: tf for tf, s in TIMEFRAME_SECONDS.items() if tf != "1d"}
    if mode in by_step:
        return by_step[mode], wall
    i = int(np.flatnonzero(step == mode)[0])
    raise ImportFileError(
        shown,
        f"cannot tell the timeframe: rows are mostly {mode} s apart (lines {lines[i]} and "
        f"{lines[i + 1]}); supported: daily rows at midnight, 1h, 30m",
        int(lines[i + 1]),
    )


def _interval(col: pd.Series, lines: np.ndarray, shown: str) -> str:
    text = col.astype(str).str.strip().str.lower()
    if (gone := np.flatnonzero(col.isna().to_numpy())).size:
        raise ImportFileError(shown, "missing interval", int(lines[gone[0]]))
    if (other := np.flatnonzero((text != text.iloc[0]).to_numpy())).size:
        i = other[0]
        raise ImportFileError(
            shown, f"interval changes from {text.iloc[0]!r} to {text.iloc[i]!r}", int(lines[i])
        )
    tf = _INTERVALS.get(text.iloc[0])
    if tf is None:
        raise ImportFileError(
            shown, f"unsupported interval {col.iloc[0]!r} (supported: 1d, 1h, 30m)", int(lines[0])
        )
    return tf


def _when(ts: int) -> str:
    t = pd.Timestamp(int(ts), unit="s")  # a date when at midnight (daily rows), else UTC time
    return t.strftime("%Y-%m-%d" if ts % 86400 == 0 else "%Y-%m-%d %H:%M:%S UTC")


def _check_increasing(ts: np.ndarray, lines: np.ndarray, shown: str) -> None:
    step = np.diff(ts)
    if not (bad := np.flatnonzero(step <= 0)).size:
        return
    i = bad[0]
    a, b = int(lines[i]), int(lines[i + 1])
    if step[i] == 0:
        raise ImportFileError(
            shown, f"duplicate timestamp {_when(ts[i])} on lines {a} and {b}", b
        )
    raise ImportFileError(
        shown,
        f"rows out of order: {_when(ts[i + 1])} comes after "
        f"{_when(ts[i])} (line {a})",
        b,
    )
