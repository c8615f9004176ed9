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

A last row without a final newline, or with fewer fields than the header, is a cut-off download:
it is dropped with a warning (`ParsedCsv.warnings`), never stored. The file is read in chunks of
`CHUNK_ROWS` rows and kept as typed arrays (8 bytes a value), so memory stays well under twice
the file's size however long it is (layout detection: ``feeds.csv_layout``).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from core.errors import BadWindowError, ImportFileError
from core.timeframes import TIMEFRAME_SECONDS
from feeds.csv_layout import CHUNK_ROWS, Capped, Columns, Layout, chunks, count_lines, sniff, tail

PRICE_ROLES = ("open", "high", "low", "close", "adj_close")
_INTERVALS = {"1d": "1d", "1day": "1d", "d": "1d", "24h": "1d", "1h": "1h", "60m": "1h",
              "60min": "1h", "1hour": "1h", "30m": "30m", "30min": "30m"}
_NEAR_DAY = 23 * 3600  # daily rows are ≥ 23 h apart even across a DST change
_OFFSET_RE = r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:Z|[+-]\d{2}:?\d{2})$"
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


@dataclass(frozen=True)
class ParsedCsv:
    """A validated file: ``bars`` follows the feeds/base.py bar-frame convention."""

    bars: pd.DataFrame
    timeframe: str
    layout: str
    rows_read: int
    skipped: list[tuple[int, str]]
    lines: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # per bar
    warnings: list[tuple[int, str]] = field(default_factory=list)  # (line, what was dropped)

    def line_of(self, ts: int) -> int | None:
        """The physical line of the bar at ``ts`` (None if no bar of the file has it)."""
        idx = self.bars.index.to_numpy(np.int64)
        i = int(np.searchsorted(idx, ts))
        return int(self.lines[i]) if i < idx.size and idx[i] == ts else None


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
    path: str | Path, *, drop_last: bool = False, timeframe: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> ParsedCsv:
    """Read and validate a bar file without touching any database (see module docstring)."""
    if timeframe is not None and timeframe not in TIMEFRAME_SECONDS:
        raise BadWindowError(f"timeframe {timeframe!r} cannot be imported: use 1d, 1h or 30m")
    shown = str(path)
    layout = sniff(Path(path), shown)
    cut = tail(Path(path), layout)
    cols = _read_all(Path(path), shown, layout, cut.limit, timeframe, chunk_rows)
    warnings: list[tuple[int, str]] = []
    if cut.reason is not None:
        warnings.append((cols.next_line, cut.reason))
    if cols.n == 0:
        more = " (the only one is a partial row)" if warnings else ""
        raise ImportFileError(shown, f"no data rows{more}" if more else "no data rows (header only)")
    rows_read = cols.n + len(warnings)
    keep_n = cols.n - 1 if drop_last and not warnings else cols.n
    if keep_n == 0:
        raise ImportFileError(shown, "no data rows left after dropping the last one")
    lines = cols.lines[:keep_n]
    rows = _Rows(shown, lines)
    utc = cols.utc[:keep_n]
    wall = cols.wall[:keep_n] if cols.wall is not None else None
    skip = cols.skip[:keep_n]
    skipped = [(line, why) for line, why in cols.skipped if line <= lines[-1]]

    _check_increasing(utc, rows)
    tf = timeframe or cols.interval
    if tf is None:
        tf = _infer_timeframe(utc, wall, rows)
    if tf == "1d":
        if wall is None:  # an explicit or interval-given 1d file whose rows are not a day apart
            wall = utc
        ts = wall - wall % 86400  # the row's own calendar date, at 00:00 UTC
        _check_increasing(ts, rows)
    else:
        ts, step = utc, np.diff(utc)
        if (i := _first(step < TIMEFRAME_SECONDS[tf])) is not None:
            raise rows.error(i + 1, f"bars on lines {lines[i]} and {lines[i + 1]} are "
                             f"{step[i]} s apart, less than one {tf} bar")
    if timeframe is not None:
        _check_asked(utc, wall, rows, timeframe)
    if skip.all():
        raise ImportFileError(shown, f"no usable rows: all {skip.size} data rows miss prices")
    block, m = cols.block, keep_n
    if skip.any():  # compact the kept rows to the top, one column at a time
        keep = ~skip
        m = int(keep.sum())
        for k in range(block.shape[1]):
            block[:m, k] = block[:keep_n, k][keep]
        ts, lines = ts[keep], lines[keep]
    index = pd.Index(np.array(ts[:m], dtype=np.int64), name="ts")
    bars = pd.DataFrame(block[:m], index=index, columns=cols.names, copy=False)
    return ParsedCsv(bars, tf, layout.name, rows_read, skipped, np.array(lines[:m]), warnings)


def _label(role: str) -> str:
    return "adj close" if role == "adj_close" else role


def _read_all(path: Path, shown: str, layout: Layout, limit: int | None,
              timeframe: str | None, chunk_rows: int) -> Columns:
    """Every chunk parsed and typed; the text of a chunk is dropped once it is converted."""
    names = [r for r in ("open", "high", "low") if r in layout.cols] + ["close"]
    names += ["volume"] if "volume" in layout.cols else []
    capacity = max(count_lines(path, limit) - layout.header_lines, 1)
    cols = Columns(capacity, names, layout.header_lines + 1)
    with path.open("rb") as fh:
        source: IO[bytes] = fh if limit is None else io.BufferedReader(Capped(fh, limit))
        for raw in chunks(source, shown, layout, chunk_rows):
            _add_chunk(cols, raw, shown, layout, timeframe)
    return cols


def _add_chunk(cols: Columns, raw: pd.DataFrame, shown: str, layout: Layout,
               timeframe: str | None) -> None:
    lines = np.arange(len(raw), dtype=np.int64) + cols.next_line
    cols.next_line += len(raw)
    # A blank line is NaN in every column. Numeric columns are tested first and the test
    # stops once no row is left (string-column isna costs several times a float one).
    blank = np.ones(len(raw), dtype=bool)
    for c in sorted(raw.columns, key=lambda c: not pd.api.types.is_numeric_dtype(raw[c].dtype)):
        blank &= raw[c].isna().to_numpy()
        if not blank.any():
            break
    if blank.any():  # blank lines are not rows, but they still count for line numbers
        raw, lines = raw.loc[~blank].reset_index(drop=True), lines[~blank]
    if raw.empty:
        return
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
    missing = np.column_stack([np.isnan(v) for v in prices.values()])
    skip = missing.any(axis=1)
    names = [_label(r) for r in prices]
    cols.skipped += [(int(lines[i]), "missing " + ", ".join(np.compress(missing[i], names)))
                     for i in np.flatnonzero(skip)]  # a loop over skipped rows only: few
    if "interval" in col:
        tf = _interval(col["interval"], rows)
        if cols.interval is not None and tf != cols.interval:
            raise rows.error(0, f"interval changes from {cols.interval!r} to {tf!r}")
        cols.interval = tf
    m = lines.size
    cols.room(m)
    at = slice(cols.n, cols.n + m)
    adj, close = prices.get("adj_close"), prices.get("close")
    factor = adj / close if adj is not None and close is not None else None
    out: dict[str, np.ndarray] = {r: prices[r] if factor is None else prices[r] * factor
                                  for r in ("open", "high", "low") if r in prices}
    out["close"] = adj if adj is not None else prices["close"]
    if volume is not None:
        out["volume"] = volume
    for k, name in enumerate(cols.names):
        cols.block[at, k] = out[name]
    # Wall clocks cost a second string pass: only for what can be a daily file.
    step = np.diff(np.concatenate([cols.utc[cols.n - 1 : cols.n], utc]))
    daily = timeframe == "1d" or (timeframe is None and cols.interval in (None, "1d")
                                  and not (step < _NEAR_DAY).any())
    if cols.wall is not None and daily:
        cols.wall[at] = _wall_clock(utc, text)
    else:
        cols.wall = None
    cols.lines[at] = lines
    cols.utc[at] = utc
    cols.skip[at] = skip
    cols.n += m


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


def _infer_timeframe(utc: np.ndarray, wall: np.ndarray | None, rows: _Rows) -> str:
    """1d for rows at local midnight (``wall``: their wall clocks, None when some rows are
    less than a day apart), else the most common spacing if it is 1h or 30m."""
    step = np.diff(utc)
    if wall is not None and (step.size == 0 or step.min() >= _NEAR_DAY) \
            and not (wall % 86400).any():
        return "1d"
    if step.size == 0:
        raise rows.error(0, "a single intraday row: cannot tell the timeframe, pass it")
    values, counts = np.unique(step, return_counts=True)
    mode = int(values[counts.argmax()])
    by_step = {s: tf for tf, s in TIMEFRAME_SECONDS.items() if tf != "1d"}
    if mode in by_step:
        return by_step[mode]
    i = int(np.flatnonzero(step == mode)[0])
    raise rows.error(i + 1, f"cannot tell the timeframe: rows are mostly {mode} s apart (lines "
                     f"{rows.lines[i]} and {rows.lines[i + 1]}); "
                     "supported: daily rows at midnight, 1h, 30m")


def _check_asked(utc: np.ndarray, wall: np.ndarray | None, rows: _Rows, asked: str) -> None:
    """``--timeframe`` must name the bars the file holds: an hourly file is not 30m bars."""
    if utc.size < 2:
        return
    try:
        found = _infer_timeframe(utc, wall, rows)
    except ImportFileError:
        return  # irregular rows: the spacing checks above already held
    if found != asked:
        step = np.diff(utc)
        values, counts = np.unique(step, return_counts=True)
        mode = int(values[counts.argmax()])
        i = int(np.flatnonzero(step == mode)[0])
        raise rows.error(i + 1, f"rows are {found} bars (mostly {mode} s apart), not the "
                         f"{asked} bars asked with --timeframe")


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
