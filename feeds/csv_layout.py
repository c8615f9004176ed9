"""CSV layout detection for `corrbot import`: which columns hold what, from the first lines.

`sniff` reads only the first 64 KiB (plus `tail`, the last 64 KiB, for a cut-off last row);
``feeds.csv_import`` then reads the rows in chunks. The layouts are listed in that module.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

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


