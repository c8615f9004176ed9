"""Pure formatting for chat replies: Telegram HTML, monospace tables, message splitting.

Nothing here computes a statistic; every number arrives from `service.queries` and is only
rounded for display. All text that could contain user input goes through `esc` (and is cut
to a sane length first) so Telegram never sees an entity it cannot parse.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

MESSAGE_LIMIT = 4096  # Telegram: message text, counted in UTF-16 code units
CAPTION_LIMIT = 1024  # Telegram: photo caption
# Control characters, and the bidi overrides/isolates that would let echoed text reorder the
# rest of our line (an asset "\u202eCTB" shown as "BTC").
_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def utf16_len(text: str) -> int:
    """Telegram measures lengths in UTF-16 code units (an emoji can count as two)."""
    return len(text.encode("utf-16-le")) // 2


def esc(text: object, max_len: int = 64) -> str:
    """HTML-escape ``text`` after cutting it to ``max_len`` characters and dropping controls."""
    s = _CTRL.sub("", str(text))
    if len(s) > max_len:
        s = s[: max_len - 1] + "…"
    return html.escape(s, quote=False)


def signed(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:+.{digits}f}"


def plain(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def arrow(change: float | None) -> str:
    if change is None:
        return "·"
    if abs(change) < 0.005:
        return "→"
    return "▲" if change > 0 else "▼"


def iso_ts(ts: int | None, timeframe: str = "1d") -> str:
    if ts is None:
        return "—"
    d = datetime.fromtimestamp(ts, UTC)
    return d.date().isoformat() if timeframe == "1d" else d.strftime("%Y-%m-%d %H:%MZ")


def age(ts: int | None, now: float | None = None) -> str:
    """A short "how long ago" for a UTC epoch: 45m, 5h, 3d."""
    if ts is None:
        return "no data"
    secs = max(0, int((time.time() if now is None else now) - ts))
    if secs < 3600:
        return f"{secs // 60}m ago"
    if secs < 2 * 86400:
        return f"{secs // 3600}h ago"
    return f"{secs // 86400}d ago"


def duration(secs: float) -> str:
    s = int(secs)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d {h}h {m}m" if d else (f"{h}h {m}m" if h else f"{m}m {s}s")


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool]) -> str:
    """A monospace table inside <pre>; cells are escaped here, widths from the content."""
    body = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in body) for i in range(len(header))]
    lines = []
    for r in body:
        cells = [
            c.rjust(w) if ra else c.ljust(w) for c, w, ra in zip(r, widths, right, strict=True)
        ]
        lines.append(html.escape("  ".join(cells).rstrip(), quote=False))
    return "<pre>" + "\n".join(lines) + "</pre>"


_TAG = re.compile(r"<(/?)(pre|code)\b[^>]*>")


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split on line boundaries into chunks of at most ``limit`` UTF-16 units.

    A <pre>/<code> block cut by a split is closed at the end of one chunk and reopened at
    the start of the next, so each chunk is valid HTML on its own. A single line longer
    than the limit (never produced by our formatters) is cut, backing off so no HTML
    entity is split.
    """
    chunks: list[str] = []
    cur = ""
    open_tags: list[str] = []
    reserve = 32  # room for the closing tags appended to a chunk
    for line in _hard_wrap(text.split("\n"), limit - 2 * reserve):
        candidate = f"{cur}\n{line}" if cur else line
        if cur and utf16_len(candidate) + reserve > limit:
            chunks.append(cur + "".join(f"</{t}>" for t in reversed(open_tags)))
            candidate = "".join(f"<{t}>" for t in open_tags) + line
        cur = candidate
        for m in _TAG.finditer(line):
            if not m.group(1):
                open_tags.append(m.group(2))
            elif open_tags and open_tags[-1] == m.group(2):
                open_tags.pop()
    if cur.strip():
        chunks.append(cur + "".join(f"</{t}>" for t in reversed(open_tags)))
    return chunks


def _hard_wrap(lines: list[str], limit: int) -> list[str]:
    out: list[str] = []
    for line in lines:
        while utf16_len(line) > limit:
            cut = limit // 2  # UTF-16 units <= 2 per char, so this many chars always fit
            amp = line.rfind("&", max(0, cut - 10), cut)
            if amp != -1 and ";" not in line[amp:cut]:
                cut = amp
            out.append(line[:cut])
            line = line[cut:]
        out.append(line)
    return out


def fit(lines: Sequence[str], limit: int = MESSAGE_LIMIT - 96) -> str:
    """``lines`` joined, cut to one message: a list that grows with the data (mutes, episodes,
    backtest rows) drops its last lines and says how many, instead of arriving in several
    messages. Each line must be balanced HTML on its own; the source length is what is
    measured, which is never less than what Telegram counts."""
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        used += utf16_len(line) + 1
        if used > limit:
            return "\n".join([*out, f"… {len(lines) - i} more not shown"])
        out.append(line)
    return "\n".join(out)


def caption(text: str, limit: int = CAPTION_LIMIT) -> str:
    """Keep a caption under the limit by dropping whole lines from the end."""
    lines = text.split("\n")
    while len(lines) > 1 and utf16_len("\n".join(lines)) > limit:
        lines.pop()
    out = "\n".join(lines)
    return out if utf16_len(out) <= limit else esc(html.unescape(out), limit // 2)


def strip_html(text: str) -> str:
    """Plain text for the console notifier and the last-resort plain-text resend."""
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def first_line(obj: Any, max_len: int = 200) -> str:
    s = str(obj).strip().splitlines()
    return (s[0] if s else type(obj).__name__)[:max_len]
