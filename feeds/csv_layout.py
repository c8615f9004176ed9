"""CSV layout detection and chunked reading for `corrbot import` (validation: feeds.csv_import).

`sniff` reads only the first 64 KiB to decide which columns hold what (the layouts are listed
in ``feeds.csv_import``); `tail` the last 64 KiB, for a cut-off last row. `chunks` then yields
the rows `CHUNK_ROWS` at a time, and `Columns` holds what is kept of them: typed arrays,
preallocated from `count_lines`.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from core.errors import ImportFileError

_TIME_NAMES = ("date", "datetime", "timestamp", "time", "open_time", "ts")
_ROLES = {"open", "high", "low", "close", "adj_close", "volume", "interval"}
_SNIFF_BYTES = 64 * 1024
_NUMBER_OR_DATE = re.compile(r"^\s*(-?\d+(\.\d+)?|\d{4}-\d{2}-\d{2}.*)\s*$")


@dataclass(frozen=True)
class Layout:
    name: str
    header_lines: int
    cols: dict[str, int]  # role ("time", "close", …) -> column position
    ncols: int  # fields per row, from the header (or first) line
    bom: bool  # decoding as utf-8-sig makes read_csv ~50% slower: only when there is one



@dataclass(frozen=True)
class Tail:
    """Where the complete rows end: a last row without a final newline, or with fewer fields
    than the header, is a cut-off download; it is dropped (with a warning), never stored."""

    limit: int | None  # bytes to read (None: the whole file)
    reason: str | None  # why the last row is partial


def tail(path: Path, layout: Layout) -> Tail:
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - _SNIFF_BYTES))
        end = fh.read()
    complete = end.endswith(b"\n")
    body = end.rstrip(b"\r\n") if complete else end
    cut = body.rfind(b"\n") + 1
    if cut == 0 and size > len(end):  # a last line longer than 64 KiB: not a bar file row
        return Tail(None, None)
    last = body[cut:].rstrip(b"\r")
    nfields = last.count(b",") + 1
    if not last.strip() or (complete and nfields >= layout.ncols):
        return Tail(None, None)
    start = size - len(end) + cut
    if size <= len(end) and end[:cut].count(b"\n") < layout.header_lines:
        return Tail(None, None)  # the cut line is a header line: left to the usual errors
    why = ("the file does not end with a newline" if not complete
           else f"{nfields} of {layout.ncols} fields")
    return Tail(start, f"partial last row ({why}): dropped, not stored — a cut-off download?")


def _fields(line: str) -> list[str]:
    """Normalised names: ``" Adj Close"`` -> ``adj_close``."""
    return [re.sub(r"[\s_]+", "_", f.strip().strip('"').strip().lower()) for f in line.split(",")]


def sniff(path: Path, shown: str) -> Layout:
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
        return Layout("ccxt", 0, {r: i for i, r in enumerate(roles)}, len(top), bom)
    name = "binance" if "interval" in top or "symbol" in top else None
    return _named(shown, name, 1, top, lines[0], bom)


def _named(shown: str, name: str | None, header_lines: int, names: list[str], raw: str,
           bom: bool) -> Layout:
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
    return Layout(name or "ohlcv", header_lines, cols, len(names), bom)


# Tokens read as "no value". Explicit (keep_default_na=False) so that anything else that is not
# a number is an error, not a silent skip.
MISSING_TOKENS = ["", "null", "NULL", "Null", "NaN", "nan", "NA", "N/A", "n/a", "None", "none"]
CHUNK_ROWS = 100_000


class Columns:
    """The typed columns of all rows, preallocated for the file's line count and filled chunk
    by chunk (8 bytes a value; pages never written are never resident). Growing lists of
    chunks instead would be copied once more at the end, and glibc keeps freed chunks."""

    def __init__(self, capacity: int, names: list[str], first_line: int) -> None:
        self.n = 0
        self.names = names  # bar columns, in `block` order
        self.lines = np.empty(capacity, dtype=np.int64)
        self.utc = np.empty(capacity, dtype=np.int64)
        self.wall: np.ndarray | None = np.empty(capacity, dtype=np.int64)  # None: not daily
        self.skip = np.empty(capacity, dtype=bool)  # rows missing a price
        # Column-major: filling one column touches only its own pages.
        self.block = np.empty((capacity, len(names)), dtype=np.float64, order="F")
        self.skipped: list[tuple[int, str]] = []  # (line, what is missing)
        self.interval: str | None = None
        self.next_line = first_line  # physical line after the last one read

    def room(self, m: int) -> None:
        """Make room for ``m`` more rows (only if the line count was short: never expected)."""
        if self.n + m <= self.lines.size:
            return
        cap = max(2 * self.lines.size, self.n + m)
        for name in ("lines", "utc", "skip"):
            old = getattr(self, name)
            new = np.empty(cap, dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)
        if self.wall is not None:
            wall = np.empty(cap, dtype=np.int64)
            wall[: self.n] = self.wall[: self.n]
            self.wall = wall
        block = np.empty((cap, len(self.names)), dtype=np.float64, order="F")
        block[: self.n] = self.block[: self.n]
        self.block = block


class Capped(io.RawIOBase):
    """A binary file that ends at ``limit`` bytes (before a cut-off last row)."""

    def __init__(self, fh: IO[bytes], limit: int) -> None:
        super().__init__()
        self.fh, self.left = fh, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self.fh.read(min(len(buf), self.left))
        buf[: len(data)] = data
        self.left -= len(data)
        return len(data)


def count_lines(path: Path, limit: int | None) -> int:
    """Lines in the file (or its first ``limit`` bytes), a last one without newline included."""
    n, left, last = 0, limit if limit is not None else -1, b"\n"
    with path.open("rb") as fh:
        while left != 0 and (buf := fh.read(1 << 20 if left < 0 else min(1 << 20, left))):
            n += buf.count(b"\n")
            left -= len(buf) if left > 0 else 0
            last = buf[-1:]
    return n + (last != b"\n")


def chunks(source: IO[bytes], shown: str, layout: Layout,
            chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        reader = pd.read_csv(
            source, header=None, skiprows=layout.header_lines,  # type: ignore[call-overload]
            usecols=sorted(layout.cols.values()), skip_blank_lines=False, keep_default_na=False,
            na_values=MISSING_TOKENS, encoding="utf-8-sig" if layout.bom else "utf-8",
            chunksize=chunk_rows,
        )
        with reader:
            yield from reader
    except pd.errors.EmptyDataError:
        return
    except UnicodeDecodeError as exc:
        raise ImportFileError(shown, f"not UTF-8 text ({exc.reason})") from None
    except (pd.errors.ParserError, ValueError) as exc:
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise ImportFileError(shown, f"cannot parse as CSV: {msg}") from None
