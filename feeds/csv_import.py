"""CSV bar files (`corrbot import ASSET FILE`): layout detection and validation, into a bar frame.

`parse_csv` reads nothing but the file; ``service.sync.import_csv`` stores what it returns.

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

from core.errors import BadWindowError, ImportFileError
from core.timeframes import TIMEFRAME_SECONDS

# Tokens read as "no value". Explicit (keep_default_na=False) so that anything else that is not
# a number is an error, not a silent skip.
MISSING_TOKENS = ["", "null", "NULL", "Null", "NaN", "nan", "NA", "N/A", "n/a", "None", "none"]
PRICE_ROLES = ("open", "high", "low", "close", "adj_close")
_TIME_NAMES = ("date", "datetime", "timestamp", "time", "open_time", "ts")
_ROLES = {"open", "high", "low", "close", "adj_close", "volume", "interval"}
_INTERVALS = {"1d": "1d", "1day": "1d", "d": "1d", "24h": "1d", "1h": "1h", "60m": "1h",
              "60min": "1h", "1hour": "1h", "30m": "30m", "30min": "30m"}
_SNIFF_BYTES = 64 * 1024
_NEAR_DAY = 23 * 3600  # daily rows are ≥ 23 h apart even across a DST change
_OFFSET_RE = r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:Z|[+-]\d{2}:?\d{2})$"
_NUMBER_OR_DATE = re.compile(r"^\s*(-?\d+(\.\d+)?|\d{4}-\d{2}-\d{2}.*)\s*$")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


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
    bom: bool  # decoding as utf-8-sig makes read_csv ~50% slower: only when there is one


@dataclass(frozen=True)
class _Rows:
    """Where the rows came from, to turn a row index into a one-line, located error."""

    shown: str  # the path as the user gave it
    lines: np.ndarray  # physical 1-based line of each row

    def error(self, i: int | np.integer, message: str) -> ImportFileError:
        return ImportFileError(self.shown, message, int(self.lines[i]))


def _first(mask: np.ndarray) -> int | None:
    """Index of the first row where ``mask`` holds, else None."""
    hit = np.flatnonzero(mask)
    return int(hit[0]) if hit.size else None


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
    blank = raw.isna().all(axis=1).to_numpy()
    if blank.any():  # blank lines are not rows, but they still count for line numbers
        raw, lines = raw.loc[~blank].reset_index(drop=True), lines[~blank]
    if raw.empty:
        raise ImportFileError(shown, "no data rows (header only)")
    rows_read = len(raw)
    if drop_last:
        raw, lines = raw.iloc[:-1], lines[:-1]
        if raw.empty:
            raise ImportFileError(shown, "no data rows left after dropping the last one")
    rows = _Rows(shown, lines)
    col = {role: raw[pos] for role, pos in layout.cols.items()}

    utc, text = _parse_times(col["time"], rows)
    prices = {r: _numeric(col[r], _label(r), rows) for r in PRICE_ROLES if r in col}
    for role, v in prices.items():
        if (i := _first(v <= 0)) is not None:
            raise rows.error(i, f"non-positive {_label(role)} {v[i]!r}")
    volume = _numeric(col["volume"], "volume", rows) if "volume" in col else None
    if volume is not None and (i := _first(volume < 0)) is not None:
        raise rows.error(i, f"negative volume {volume[i]!r}")

    _check_increasing(utc, rows)
    tf = timeframe or (_interval(col["interval"], rows) if "interval" in col else None)
    wall: np.ndarray | None = None
    if tf is None:
        tf, wall = _infer_timeframe(utc, text, rows)
    if tf == "1d":
        wall = _wall_clock(utc, text) if wall is None else wall
        ts = wall - wall % 86400  # the row's own calendar date, at 00:00 UTC
        _check_increasing(ts, rows)
    else:
        ts, step = utc, np.diff(utc)
        if (i := _first(step < TIMEFRAME_SECONDS[tf])) is not None:
            raise rows.error(i + 1, f"bars on lines {lines[i]} and {lines[i + 1]} are "
                             f"{step[i]} s apart, less than one {tf} bar")

    missing = np.column_stack([np.isnan(v) for v in prices.values()])
    skip = missing.any(axis=1)
    names = [_label(r) for r in prices]
    skipped = [(int(lines[i]), "missing " + ", ".join(np.compress(missing[i], names)))
               for i in np.flatnonzero(skip)]  # a loop over skipped rows only: few
    if skip.all():
        raise ImportFileError(shown, f"no usable rows: all {skip.size} data rows miss prices")
    keep = ~skip
    adj, close = prices.get("adj_close"), prices.get("close")
    factor = adj / close if adj is not None and close is not None else 1.0
    out: dict[str, np.ndarray] = {r: prices[r] * factor for r in ("open", "high", "low")
                                  if r in prices}
    out["close"] = adj if adj is not None else prices["close"]
    if volume is not None:
        out["volume"] = volume
    index = pd.Index(ts[keep], name="ts", dtype="int64")
    bars = pd.DataFrame({k: v[keep] for k, v in out.items()}, index=index)
    return ParsedCsv(bars, tf, layout.name, rows_read, skipped)


def _label(role: str) -> str:
    return "adj close" if role == "adj_close" else role


def _fields(line: str) -> list[str]:
    """Normalised names: ``" Adj Close"`` -> ``adj_close``."""
    return [re.sub(r"[\s_]+", "_", f.strip().strip('"').strip().lower()) for f in line.split(",")]


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
    try:  # incremental, so a character cut at the sniff boundary is not an error
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise ImportFileError(shown, f"not UTF-8 text (bad byte at offset {exc.start})") from None
    if not text.strip():
        raise ImportFileError(shown, "file is empty")
    bom = head.startswith(codecs.BOM_UTF8)
    lines = [line.rstrip("\r") for line in text.split("\n")]
    top = _fields(lines[0])
    if top[0] == "price":
        third = _fields(lines[2]) if len(lines) > 3 else [""]
        if len(lines) < 4 or _fields(lines[1])[0] != "ticker" or third[0] not in _TIME_NAMES \
                or any(third[1:]):
            raise ImportFileError(shown, "incomplete yfinance multi-line header "
                                  "(expected Price, Ticker and Date lines)", 1)
        tickers = sorted({f.upper() for f in _fields(lines[1])[1:] if f})
        if len(tickers) > 1:
            raise ImportFileError(shown, f"holds several tickers ({', '.join(tickers)}): "
                                  "save one ticker per file", 2)
        return _named(shown, "yfinance-multi", 3, [third[0], *top[1:]], lines[0], bom)
    if _NUMBER_OR_DATE.match(lines[0].split(",")[0]):
        if len(top) < 5:
            raise ImportFileError(shown, f"headerless file with {len(top)} columns: need "
                                  "timestamp, open, high, low, close[, volume]", 1)
        roles = ["time", "open", "high", "low", "close", "volume"][: len(top)]
        return _Layout("ccxt", 0, {r: i for i, r in enumerate(roles)}, bom)
    name = "binance" if "interval" in top or "symbol" in top else None
    return _named(shown, name, 1, top, lines[0], bom)


def _named(shown: str, name: str | None, header_lines: int, names: list[str], raw: str,
           bom: bool) -> _Layout:
    cols: dict[str, int] = {}
    for pos, n in enumerate(names):
        if n in _TIME_NAMES:  # the first one wins (Binance dumps also have close_time)
            cols.setdefault("time", pos)
            continue
        role = n.replace("adjc", "adj_c")
        if role in _ROLES:
            if role in cols:
                raise ImportFileError(shown, f"column {n!r} appears twice", header_lines)
            cols[role] = pos
    if "time" not in cols or not {"close", "adj_close"} & cols.keys():
        raise ImportFileError(shown, f"unrecognised header {raw.strip()[:80]!r}: need a "
                              "Date/Datetime/timestamp column and a Close column", 1)
    if name is None and names[cols["time"]] in ("date", "datetime"):
        name = "yahoo" if "adj_close" in cols else "yfinance"
    return _Layout(name or "ohlcv", header_lines, cols, bom)


def _read(path: Path, shown: str, layout: _Layout) -> pd.DataFrame:
    try:
        return pd.read_csv(
            path, header=None, skiprows=layout.header_lines, usecols=sorted(layout.cols.values()),
            skip_blank_lines=False, keep_default_na=False, na_values=MISSING_TOKENS,
            encoding="utf-8-sig" if layout.bom else "utf-8",
        )
    except pd.errors.EmptyDataError:
        raise ImportFileError(shown, "no data rows (header only)") from None
    except UnicodeDecodeError as exc:
        raise ImportFileError(shown, f"not UTF-8 text ({exc.reason})") from None
    except (pd.errors.ParserError, ValueError) as exc:
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise ImportFileError(shown, f"cannot parse as CSV: {msg}") from None


def _numeric(col: pd.Series, label: str, rows: _Rows) -> np.ndarray:
    """Float values; missing tokens become NaN, anything else non-numeric is an error."""
    if pd.api.types.is_numeric_dtype(col.dtype):
        values = col.to_numpy(dtype="float64")
        bad = np.isinf(values)
    else:  # some cell did not parse as a number: find it
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64")
        bad = (col.notna().to_numpy() & np.isnan(values)) | np.isinf(values)
    if (i := _first(bad)) is not None:
        raise rows.error(i, f"non-numeric {label} {str(col.iloc[i])!r}")
    return values


def _parse_times(col: pd.Series, rows: _Rows) -> tuple[np.ndarray, pd.Series | None]:
    """UTC epoch seconds per row, plus the strings (None for numeric epochs) for wall clocks."""
    if (i := _first(col.isna().to_numpy())) is not None:
        raise rows.error(i, "missing timestamp")
    if pd.api.types.is_numeric_dtype(col.dtype) or _NUMBER.fullmatch(str(col.iloc[0]).strip()):
        num = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64")
        if (i := _first(np.isnan(num))) is not None:
            raise rows.error(i, f"unparseable timestamp {str(col.iloc[i])!r}")
        # The unit follows from the magnitude: seconds until the year 5138, then ms, µs, ns.
        big = float(np.abs(num).max())
        div = 1e9 if big >= 1e17 else 1e6 if big >= 1e14 else 1e3 if big >= 1e11 else 1.0
        return np.floor(num / div).astype("int64"), None
    text = col.astype(str)
    dt = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    if (i := _first(dt.isna().to_numpy())) is not None:
        raise rows.error(i, f"unparseable timestamp {text.iloc[i]!r}")
    return _seconds(dt), text


def _seconds(dt: pd.Series) -> np.ndarray:
    epoch = pd.Timestamp(0, tz="UTC") if getattr(dt.dt, "tz", None) is not None else pd.Timestamp(0)
    return ((dt - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype="int64")


def _wall_clock(utc: np.ndarray, text: pd.Series | None) -> np.ndarray:
    """Epoch seconds of each row's local wall-clock time (its own UTC offset dropped)."""
    if text is None:
        return utc
    return _seconds(pd.to_datetime(text.str.replace(_OFFSET_RE, r"\1", regex=True),
                                   format="ISO8601"))


def _infer_timeframe(utc: np.ndarray, text: pd.Series | None,
                     rows: _Rows) -> tuple[str, np.ndarray | None]:
    step = np.diff(utc)
    wall = None
    # Only rows a day apart can be daily: spare intraday files the wall-clock work.
    if step.size == 0 or step.min() >= _NEAR_DAY:
        wall = _wall_clock(utc, text)
        if not (wall % 86400).any():
            return "1d", wall
    if step.size == 0:
        raise rows.error(0, "a single intraday row: cannot tell the timeframe, pass it")
    values, counts = np.unique(step, return_counts=True)
    mode = int(values[counts.argmax()])
    by_step = {s: tf for tf, s in TIMEFRAME_SECONDS.items() if tf != "1d"}
    if mode in by_step:
        return by_step[mode], wall
    i = int(np.flatnonzero(step == mode)[0])
    raise rows.error(i + 1, f"cannot tell the timeframe: rows are mostly {mode} s apart (lines "
                     f"{rows.lines[i]} and {rows.lines[i + 1]}); "
                     "supported: daily rows at midnight, 1h, 30m")


def _interval(col: pd.Series, rows: _Rows) -> str:
    if (i := _first(col.isna().to_numpy())) is not None:
        raise rows.error(i, "missing interval")
    values = col.to_numpy()
    if (i := _first(values != values[0])) is not None:  # no per-row string ops: 1M rows
        raise rows.error(i, f"interval changes from {values[0]!r} to {values[i]!r}")
    tf = _INTERVALS.get(str(values[0]).strip().lower())
    if tf is None:
        raise rows.error(0, f"unsupported interval {values[0]!r} (supported: 1d, 1h, 30m)")
    return tf


def _when(ts: int) -> str:
    t = pd.Timestamp(int(ts), unit="s")  # a date when at midnight (daily rows), else UTC time
    return t.strftime("%Y-%m-%d" if ts % 86400 == 0 else "%Y-%m-%d %H:%M:%S UTC")


def _check_increasing(ts: np.ndarray, rows: _Rows) -> None:
    step = np.diff(ts)
    if (i := _first(step <= 0)) is None:
        return
    a, b = rows.lines[i], rows.lines[i + 1]
    if step[i] == 0:
        raise rows.error(i + 1, f"duplicate timestamp {_when(ts[i])} on lines {a} and {b}")
    raise rows.error(i + 1, f"rows out of order: {_when(ts[i + 1])} comes after "
                     f"{_when(ts[i])} (line {a})")
