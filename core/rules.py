"""Alert rules, the schedule and the metrics exporter, as configured (``[[rules]]``,
``[schedule]``, ``[metrics]``).

Each rule kind is its own model, picked by ``kind``, so a typo in a threshold is an error that
names the key (``rules[2].abvoe: extra inputs are not permitted``). Cross-checks that need the
rest of the config (windows, pairs) live in ``core.config._check_rules``. ``/set`` validates an
override by rebuilding the rule through the same models.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Severity = Literal["critical", "warning", "info"]
Direction = Literal["up", "down", "both"]
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | int) -> int:
    """``"6h"`` -> 21600 seconds; ``0`` / ``"0"`` -> 0. Raises ValueError with the allowed form."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return text
    if isinstance(text, str) and text.strip() == "0":
        return 0
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 6h, 2d, 1w)")
    return int(m.group(1)) * _UNIT[m.group(2).lower()]


def format_duration(seconds: int) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
    timeframe: Literal["1d", "1h"] = "1d"
    window: int | None = None  # must be one of the timeframe's windows (checked in config)
    pairs: list[str] | None = None  # "A/B"; default every configured pair
    severity: Severity = "warning"
    for_bars: Annotated[int, Field(ge=1, le=1000)] = 1
    repeat_interval: int = 0  # seconds; "6h" in TOML
    cooldown: int = 0  # seconds

    @field_validator("repeat_interval", "cooldown", mode="before")
    @classmethod
    def _duration(cls, v: object) -> int:
        if not isinstance(v, str | int) or isinstance(v, bool):
            raise ValueError("a duration like \"6h\" or 0")
        return parse_duration(v)


class CorrLevelRule(_Rule):
    """Fires while ρ ≥ above (or ≤ below, for decoupling); clears at clear_below / clear_above."""

    kind: Literal["corr_level"]
    above: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    clear_below: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    below: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    clear_above: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None

    @model_validator(mode="after")
    def _one_side(self) -> CorrLevelRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above (spike) or below (decoupling)")
        if self.above is not None and self.clear_below is not None and self.clear_below > self.above:
            raise ValueError("clear_below must be at or under above (hysteresis)")
        if self.below is not None and self.clear_above is not None and self.clear_above < self.below:
            raise ValueError("clear_above must be at or over below (hysteresis)")
        if self.above is None and self.clear_below is not None:
            raise ValueError("clear_below goes with above")
        if self.below is None and self.clear_above is not None:
            raise ValueError("clear_above goes with below")
        return self


class CorrJumpRule(_Rule):
    """ρ(t) − ρ(t − lookback) beyond delta."""

    kind: Literal["corr_jump"]
    lookback: Annotated[int, Field(ge=1, le=1000)] = 5
    delta: Annotated[float, Field(gt=0.0, le=2.0)]
    direction: Direction = "both"
    clear_delta: Annotated[float, Field(ge=0.0, le=2.0)] | None = None


class CorrZscoreRule(_Rule):
    """Fisher z of ρ against its own mean and sd over the previous `history` bars."""

    kind: Literal["corr_zscore"]
    history: Annotated[int, Field(ge=10, le=5000)] = 252
    z: Annotated[float, Field(gt=0.0, le=20.0)] = 2.5
    direction: Direction = "both"
    clear_z: Annotated[float, Field(ge=0.0, le=20.0)] | None = None


class DivergenceRule(_Rule):
    """The crypto asset moved away from what its beta to the equity side predicts."""

    kind: Literal["divergence"]
    horizon: Annotated[int, Field(ge=1, le=50)] = 3
    z: Annotated[float, Field(gt=0.0, le=20.0)] = 3.0
    min_corr: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.3
    direction: Direction = "both"
    clear_z: Annotated[float, Field(ge=0.0, le=20.0)] | None = None


class StaleRule(_Rule):
    """A source (exchange id or ``yahoo``) with no successful poll for longer than `after`."""

    kind: Literal["stale"]
    after: int = 3600  # seconds ("2h"); Yahoo counted in NYSE session time only
    sources: list[str] | None = None  # default: every configured source

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, v: object) -> int:
        if not isinstance(v, str | int) or isinstance(v, bool):
            raise ValueError("a duration like \"2h\"")
        secs = parse_duration(v)
        if secs < 60:
            raise ValueError("must be at least 1m")
        return secs


RuleConfig = Annotated[
    CorrLevelRule | CorrJumpRule | CorrZscoreRule | DivergenceRule | StaleRule,
    Field(discriminator="kind"),
]
KINDS = ("corr_level", "corr_jump", "corr_zscore", "divergence", "stale")


class ScheduleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    crypto_poll_minutes: Annotated[int, Field(ge=1, le=1440)] = 5
    equity_poll_minutes: Annotated[int, Field(ge=1, le=390)] = 15
    close_delay_minutes: Annotated[int, Field(ge=0, le=600)] = 20
    delivery_seconds: Annotated[float, Field(ge=0.5, le=600.0)] = 5.0
    digest_time: str | None = None  # "HH:MM" in `timezone`; off by default
    timezone: str = "UTC"

    @field_validator("digest_time")
    @classmethod
    def _hhmm(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
            raise ValueError("use HH:MM, 24-hour (e.g. 08:30)")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
            raise ValueError(f"unknown time zone {v[:40]!r} (use an IANA name like Europe/London)") from None
        return v


class MetricsConfig(BaseModel):
    """``[metrics]``: a Prometheus exporter for `corrbot run`, off unless ``listen`` is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str | None = None  # "127.0.0.1:9464"; keep it on loopback or behind a firewall

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"use host:port, e.g. 127.0.0.1:9464 (got {v!r})")
        return v
