"""Generated chat traffic for tests/test_chat_fuzz.py: commands, plain text, edits, button presses.

`generate(seed, n, world)` returns ``n`` updates, the same ones for the same seed. Commands come
from the bot's one command list (`bot.args.SPECS`, read at run time, so a new command is fuzzed
as soon as it is listed) plus unknown ones; arguments mix what the command expects (asset names,
windows, periods, durations, rule names, /set keys and values) with hostile text: HTML and
Markdown, entity strings, right-to-left and zero-width characters, control characters, huge and
non-finite numbers, tokens thousands of characters long. Button payloads are real ``c:``/``m:``
data for stored alerts, the same for alerts that do not exist, and garbage.

Every update has its own chat (and so its own sender), so each reply can be traced to the update
it answers, and each carries what the bot must send back (`Gen.replies`, 0 or 1): the oracle.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

# Sender id ranges (disjoint): update i of each kind gets base + i.
ALLOWED_BASE = 10**9  # allow-listed users, private chat
STRANGER_BASE = 2 * 10**9  # nobody's: private chat, or a group nobody allowed
MEMBER_BASE = 3 * 10**9  # not allow-listed, but in an allowed group
ADMIN_BASE = 4 * 10**9  # admins, private chat or any group
GROUP_BASE = 10**9  # group chat ids are -(GROUP_BASE + i); supergroups -(10**12 + i)


@dataclass(frozen=True)
class World:
    """What the generator draws sensible arguments from."""

    commands: Sequence[str]  # bot.args.SPECS
    names: Sequence[str]  # configured assets and baskets
    rules: Sequence[str]
    rule_keys: Sequence[str]  # every field of every rule kind, for /set
    keys_of: dict[str, Sequence[str]]  # rule name -> its own fields
    chart_episodes: Sequence[int]  # episodes with a pair (their c: button sends a chart)
    other_episodes: Sequence[int]  # episodes without a pair (stale feeds)
    bot_username: str
    flags: dict[str, tuple[int, bool, bool, bool]] = field(default_factory=dict)  # max_assets, window, tf, period
    # Commands drawn less often (weight 1 for the rest): those whose answer takes long to compute
    # (a chart, a replay), so 10,000 updates stay within a test's time; each is still sent hundreds of times.
    weights: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Sender:
    user_id: int
    chat_id: int
    chat_type: str  # private, group, supergroup
    allowed: bool
    admin: bool


@dataclass(frozen=True)
class Gen:
    kind: str  # "message", "edited" or "callback"
    text: str  # the message text, or the callback data ("" with data=None: no data)
    sender: Sender
    entity_length: int = 0  # bot_command entity at offset 0, UTF-16 units (0: none)
    thread_id: int | None = None
    data: str | None = None
    replies: int = 0  # messages or photos the bot must send to sender.chat_id

    def __repr__(self) -> str:  # failures print these: keep them readable
        body = self.text if len(self.text) < 160 else f"{self.text[:150]}…({len(self.text)} chars)"
        return f"Gen({self.kind} {body!r} from {self.sender.chat_type} allowed={self.sender.allowed} " \
               f"admin={self.sender.admin} entity={self.entity_length} replies={self.replies})"


# ---- tokens ------------------------------------------------------------------------------------

HOSTILE = [
    "<b>", "</b>", "<b>bold", "<i>x</i>", "<a href=\"javascript:alert(1)\">x</a>", "<script>", "<<b>>", "<>",
    "</pre>", "<pre>", "<code>", "<tg-spoiler>", "<blockquote>", "&", "&&", "&amp;", "&lt;", "&gt;", "&#0;",
    "&#x110000;", "&nbsp;", "&;", "a&b<c>d", "\"'", "*bold*", "_it_", "`code`", "```", "[x](tg://user?id=1)",
    "~~s~~", "||spoiler||", "\\", "%s %d {} {0}", "'; DROP TABLE corr;--", "../../etc/passwd", "${HOME}",
    "\u202eBTC", "\u202e", "بيتكوين", "עברית", "B\u200bTC", "\u200b", "\u200d", "\ufeff", "\u2060", "\u00ad",
    "i̇", "ß", "ﬀ", "Ｂｔｃ", "٣٠", "３０", "𝟑𝟎", "🚀", "🚀🚀🚀", "👨‍👩‍👧‍👦", "🏳️‍🌈", "БТЦ", "ᏴᎢᏟ", "\x00", "\x07",
    "\x1b[31mred", "\r", "nan", "NaN", "inf", "-inf", "Infinity", "1e308", "1e999", "-1e999", "-0", "0.0", "1/0",
    "0x1F", "1_000", "9" * 40, "9" * 400, "-" + "9" * 30, "4294967296", "-2147483649", "0" * 50 + "30",
    "w" + "9" * 20, "1" * 7 + "y", "99999d", "@mybot", "@", "#", "#-1", "/corr", "//", "btc\tpsct",
]
SEPARATORS = [" "] * 12 + ["  ", "\t", "\n", "\u00a0", "\u3000", "\u2003", " \n "]
WINDOWS = ["30", "90", "w30", "W90", "45", "w0", "0", "-1", "007", "w", "3", "5000", "w90"]
TIMEFRAMES = ["1d", "1h", "1D", "1H", "2h", "1m"]
PERIODS = ["7d", "6d", "90d", "6m", "1y", "2y", "all", "ALL", "0d", "1w", "100y", "101y", "9999y", "12m"]
DURATIONS = ["1m", "30m", "2h", "6H", "1d", "1w", "30d", "31d", "59s", "60s", "0", "10", "999999w", "1.5h", "-1h"]
SET_VALUES = ["0.65", "-0.2", "0.3", "1.5", "-1", "2", "3", "0", "nan", "inf", "-inf", "1e308", "none", "off",
              "null", "up", "down", "both", "critical", "info", "2h", "0s", "5", "10", "252", "1000", "true"]

VALUES_FOR = {"direction": ["up", "down", "both"], "severity": ["critical", "warning", "info"],
              "repeat_interval": ["2h", "0", "1d"], "cooldown": ["30m", "0"], "after": ["1h", "3h", "30s"]}


def _case(rng: random.Random, s: str) -> str:
    r = rng.random()
    if r < 0.6:
        return s
    if r < 0.75:
        return s.lower()
    if r < 0.85:
        return s.upper()
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in s)


def _random_text(rng: random.Random, max_len: int) -> str:
    """Random code points from all of Unicode except surrogates (Telegram sends valid UTF-8)."""
    out = []
    for _ in range(rng.randint(1, max_len)):
        r = rng.random()
        if r < 0.5:
            out.append(chr(rng.randint(0x21, 0x7E)))
        elif r < 0.8:
            out.append(chr(rng.randint(0xA0, 0xD7FF)))
        elif r < 0.95:
            out.append(chr(rng.randint(0x1F300, 0x1FAFF)))
        else:
            out.append(chr(rng.choice([rng.randint(0xE000, 0xFFFD), rng.randint(0x10000, 0x10FFFF)])))
    return "".join(out)


def _long(rng: random.Random) -> str:
    unit = rng.choice(["A", "🚀", "&", "<b>", "&amp;", "ß", "\u200b", "BTC ", "é"])
    return unit * rng.randint(4096 // len(unit) // 2, 6000 // len(unit))


class _Gen:
    def __init__(self, seed: int, world: World) -> None:
        self.rng = random.Random(seed)
        self.w = world

    # ---- arguments -------------------------------------------------------------------------

    def sensible(self, command: str) -> str:
        rng, w = self.rng, self.w
        names = [*w.names, "rut", "^rut", "btcc", "SMALLCAP", "eth/iwm", "BTC/IWM", "btc/eth", "iwm/btc"]
        if command == "mute":
            return rng.choice([*DURATIONS, *DURATIONS, *w.rules, *names])
        if command == "unmute":
            return rng.choice(["1", "#1", "2", "all", "ALL", "#0", "0", "999999999", "1234567890", "#", "x"])
        if command == "set":
            return rng.choice([*w.rules, *w.rules, *w.rule_keys, *SET_VALUES, "reset", "RESET", "name", "kind"])
        if command == "backtest":
            return rng.choice([*w.rules, *PERIODS])
        if command == "alerts":
            return rng.choice(["1", "5", "10", "99", "100", "0", "-3", "05"])
        max_assets, window, tf, period = w.flags.get(command, (2, True, True, True))
        pool = list(names) if max_assets or command not in w.flags else []
        pool += WINDOWS if window else []
        pool += TIMEFRAMES if tf else []
        pool += PERIODS if period else []
        return rng.choice(pool or [*names, *WINDOWS])

    def token(self, command: str) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.55:
            return _case(rng, self.sensible(command))
        if r < 0.85:
            return rng.choice(HOSTILE)
        if r < 0.97:
            return _random_text(rng, 24)
        return _long(rng)

    def args(self, command: str) -> str:
        rng, w = self.rng, self.w
        if rng.random() < 0.25:  # well-formed, so the commands that change state do change it
            if command == "set":
                rule = rng.choice(w.rules)
                key = rng.choice(w.keys_of.get(rule) or w.rule_keys)
                fits = VALUES_FOR.get(key, ["0.65", "0.3", "-0.2", "2", "5", "30", "90", "none"])
                toks = [rule, key, rng.choice(fits if rng.random() < 0.7 else SET_VALUES)]
            elif command == "mute":
                toks = [rng.choice(DURATIONS), self.sensible("mute")][: rng.randint(1, 2)]
            else:
                toks = [self.sensible(command) for _ in range(rng.randint(1, 3))]
            return "".join(" " + _case(rng, t) for t in toks)
        n = rng.choice([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 7, 12])
        out = ""
        for _ in range(n):
            out += rng.choice(SEPARATORS) + self.token(command)
        return out

    # ---- senders ---------------------------------------------------------------------------

    def sender(self, i: int) -> Sender:
        r = self.rng.random()
        group = "supergroup" if self.rng.random() < 0.5 else "group"
        gid = -(10**12 + i) if group == "supergroup" else -(GROUP_BASE + i)
        if r < 0.55:
            return Sender(ALLOWED_BASE + i, ALLOWED_BASE + i, "private", True, False)
        if r < 0.65:
            return Sender(ADMIN_BASE + i, ADMIN_BASE + i, "private", True, True)
        if r < 0.72:
            return Sender(ADMIN_BASE + i, gid, group, True, True)
        if r < 0.84:
            return Sender(MEMBER_BASE + i, gid, group, True, False)
        if r < 0.94:
            return Sender(STRANGER_BASE + i, STRANGER_BASE + i, "private", False, False)
        return Sender(STRANGER_BASE + i, gid, group, False, False)

    # ---- updates ---------------------------------------------------------------------------

    def head(self) -> tuple[str, bool]:
        """A command word with an optional @suffix, and whether it is one of ours."""
        rng, w = self.rng, self.w
        if rng.random() < 0.9:
            cmds = list(w.commands)
            name, ours = _case(rng, rng.choices(cmds, [w.weights.get(c, 1.0) for c in cmds])[0]), True
        else:
            name, ours = rng.choice(["foo", "corrr", "corr_", "start_", "a" * 33, "x" * 70, "🚀", "корр", "",
                                     "c0rr", "Heat", "settings", "/corr", "rank-1"]), False
        r = rng.random()
        suffix = ""
        if r < 0.1:
            suffix = "@" + w.bot_username
        elif r < 0.14:
            suffix = "@" + w.bot_username.upper()
        elif r < 0.2:
            suffix = "@otherbot"
        elif r < 0.22:
            suffix = "@"
        elif r < 0.24:
            suffix = f"@{w.bot_username}@x"
        elif r < 0.26:
            suffix = "@" + _random_text(rng, 8)
        elif r < 0.28:
            suffix = f"@{w.bot_username}" + rng.choice(["!", ",", ".", "<b>", "🚀", "_"])
        return "/" + name + suffix, ours

    def entity(self, text: str) -> int:
        """Mostly what Telegram marks as a bot_command; sometimes the whole first word (an odd
        client), sometimes any length at all."""
        import re

        rng = self.rng
        r = rng.random()
        if r < 0.8:
            m = re.match(r"/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{1,64})?", text)
            return len(m.group(0)) if m else 0
        if r < 0.95:
            head = text.split()[0] if text.split() else text
            return len(head.encode("utf-16-le")) // 2
        return rng.randint(1, len(text.encode("utf-16-le")) // 2 + 5)

    def message(self, i: int) -> Gen:
        rng = self.rng
        s = self.sender(i)
        r = rng.random()
        if r < 0.04:  # not a command at all
            text = rng.choice([_random_text(rng, 60), "hello", "corr btc", "<b>hi</b>", _long(rng), " /corr",
                               "?", "🚀"])
            return Gen("message", text, s, 0, None, replies=0)
        if r < 0.06:  # a slash, but no command entity ("/ corr", "/корр")
            text = rng.choice(["/ corr", "/", "/корр btc", "/🚀", "//", "/" + _random_text(rng, 20)])
            return Gen("message", text, s, 0, None, replies=0)
        head, _ = self.head()
        text = head + self.args(head[1:].split("@")[0].lower())
        if rng.random() < 0.01:
            text = head + " " + _long(rng)
        ent = self.entity(text)
        thread = rng.choice([None, None, 7, 2**31 - 1]) if s.chat_type != "private" else None
        edited = rng.random() < 0.05
        replies = 0 if edited else expected_replies(text, ent, s, self.w)
        return Gen("edited" if edited else "message", text, s, ent, thread, replies=replies)

    def callback(self, i: int) -> Gen:
        rng, w = self.rng, self.w
        s = self.sender(i)
        eps = list(w.chart_episodes) + list(w.other_episodes)
        r = rng.random()
        data: str | None
        if r < 0.005 and w.chart_episodes:
            data = f"c:{rng.choice(w.chart_episodes)}"
        elif r < 0.2 and eps:
            data = f"m:{rng.choice(eps)}:{rng.choice(['1h', '24h'])}"
        elif r < 0.25 and w.other_episodes:
            data = f"c:{rng.choice(w.other_episodes)}"
        elif r < 0.45:
            eid = rng.choice([0, 999999, 10**12 - 1, 2**31, rng.randint(1, 10**6)])
            data = rng.choice([f"c:{eid}", f"m:{eid}:1h", f"m:{eid}:24h"])
        elif r < 0.9:
            e = rng.choice(eps or [1])
            data = rng.choice([
                f"m:{e}", f"m:{e}:2h", f"m:{e}:1H", f"c:{e}:1h", f"c:-{e}", f"c:{e}\n", f"c: {e}", f"C:{e}",
                f"c:{e}" + "0" * 12, f"c:{'٣' * 3}", f"m:{'３'}:1h", "c:", "m::1h", ":", "", "x" * 64,
                "c:" + "9" * 62, "<b>", "&amp;", "🚀" * 16, "Hello world!", f"c:{e}" + "\u200b",
                _random_text(rng, 40), _long(rng)[:300],
            ])
        else:
            data = None
        chart = (data is not None and s.allowed and data.startswith("c:")
                 and data[2:].isdigit() and data[2:].isascii() and int(data[2:]) in w.chart_episodes)
        return Gen("callback", data or "", s, data=data, replies=int(chart))


def expected_replies(text: str, entity: int, s: Sender, w: World) -> int:
    """How many messages the bot sends for a new message (Telegram's rules and ours):

    no command entity: none. ``/cmd@otherbot``: none (addressed to another bot). A sender who is
    not allowed: one refusal. One of our commands: one reply. An unknown command: one reply in a
    private chat or when addressed to us by name, none in a group (it may be another bot's).
    The command is the entity's text, as python-telegram-bot reads it."""
    if not entity or not text.startswith("/"):
        return 0
    command = text[1:entity]
    parts = [*command.split("@"), w.bot_username]
    if "@" in command and parts[1].lower() != w.bot_username.lower():
        return 0
    if not s.allowed:
        return 1
    if parts[0].lower() in w.commands:
        return 1
    return 1 if s.chat_type == "private" or "@" in command else 0


def generate(seed: int, n: int, world: World, callbacks: float = 0.2) -> list[Gen]:
    g = _Gen(seed, world)
    return [g.callback(i) if g.rng.random() < callbacks else g.message(i) for i in range(n)]
