"""Read side of the analysis commands: /heatmap, /leadlag, /history's picture, alert context.

Like `service.queries`, every function takes (db, cfg, …), resolves user-typed names against
the config, reads stored correlations only through `storage.corr` or computes from stored
bars with monitors/, and returns `core.models` dataclasses for the CLI and bot/ to format.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlite_utils

from core.calendar import DAY
from core.config import Config
from core.errors import BadWindowError, NotEnoughDataError
from core.fomc import nearest_decision
from core.models import HeatCell, Heatmap, HistoryChartData, LeadLag, LeadLagRow
from monitors.align import pair_returns
from monitors.analysis import dimson_beta, lead_lag
from service import queries as q
from service.pipeline import build_panel
from storage import corr as corr_store

MAX_LAG = 5
GROUP_LABEL = {"small": "small-cap", "large": "large-cap"}


def _num(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def heatmap(db: sqlite_utils.Database, cfg: Config, *, window: int | None = None, timeframe: str = "1d") -> Heatmap:
    """The latest stored correlation of every crypto asset/basket with every equity one."""
    tf = q.check_timeframe(cfg, timeframe)
    w = q.check_window(cfg, window if window is not None else cfg.default_window(tf), tf)[0]
    rows = list(dict.fromkeys(a for a, _ in cfg.pair_list))
    cols = cfg.by_cap(list(dict.fromkeys(b for _, b in cfg.pair_list)))
    watched = set(cfg.pair_list)
    cells: list[HeatCell] = []
    asof: int | None = None
    for a in rows:
        for b in cols:
            if (a, b) not in watched:
                cells.append(HeatCell(a, b, None, 0))
                continue
            r = q._reading(db, cfg, a, b, tf, w)
            cells.append(HeatCell(a, b, r.value, r.n))
            if r.asof is not None:
                asof = r.asof if asof is None else max(asof, r.asof)
    return Heatmap(tf, w, rows, cols, [cfg.cap_of(b) for b in cols], cells, asof)


def leadlag(
    db: sqlite_utils.Database, cfg: Config, a: str | None = None, b: str | None = None, *,
    timeframe: str = "1d", period_days: int | None = 365, period_label: str = "1y", max_lag: int = MAX_LAG,
) -> LeadLag:
    """Correlation of a's returns at t with b's at t + k, k = −max_lag … +max_lag, over the
    period ending at the pair's last return; plain and Dimson beta over the same returns."""
    tf = q.check_timeframe(cfg, timeframe)
    reading = q.corr_readings(db, cfg, a, b, window=cfg.default_window(tf), timeframe=tf)[0]
    ca, cb = q._oriented(cfg, reading.a, reading.b)
    panel = build_panel(db, cfg, tf)
    r = pair_returns(panel[ca].dropna(), panel[cb].dropna(), tf)
    if len(r) and period_days is not None:
        r = r[r.index > int(r.index[-1]) - period_days * DAY]
    need = 2 * max_lag + 4
    if len(r) < need:
        raise NotEnoughDataError(f"{ca}/{cb} {tf} lead-lag", len(r), need)
    x, y = r["x"].to_numpy(np.float64), r["y"].to_numpy(np.float64)
    rows = [
        LeadLagRow(row.lag, _num(row.r), (row.lo, row.hi) if np.isfinite(row.lo) else None, row.n)
        for row in lead_lag(x, y, max_lag)
    ]
    beta = float(np.cov(x, y)[0, 1] / np.var(y, ddof=1))
    dim, b0, b1 = dimson_beta(x, y)
    return LeadLag(ca, cb, tf, int(r.index[0]), int(r.index[-1]), len(r), rows, _num(beta), _num(dim),
                   (b0, b1) if np.isfinite(dim) else None, period_label)


def history_chart(db: sqlite_utils.Database, cfg: Config, a: str | None = None) -> HistoryChartData:
    """/history's table as a picture: counterparts grouped small-cap / other / large-cap."""
    hist = q.history(db, cfg, a)
    groups: dict[str, list[str]] = {}
    for b in cfg.by_cap(cfg.counterparts(hist.a)):
        cap = cfg.cap_of(b) if cfg.kind_of(b) == "equity" else None
        groups.setdefault(GROUP_LABEL.get(cap or "", "other"), []).append(b)
    if set(groups) == {"other"}:  # nothing marked: one bar per counterpart
        groups = {b: [b] for b in groups["other"]}
    return HistoryChartData(hist.a, hist, groups)


def alert_context(
    db: sqlite_utils.Database, cfg: Config, a: str, b: str, timeframe: str, window: int, ts: int
) -> dict[str, float]:
    """What a fire message adds: the percentile of the pair's correlation at ``ts`` in its stored
    history up to then, and the nearest FOMC decision within `telegram.fomc_sessions`."""
    out: dict[str, float] = {}
    sid = corr_store.find_series(db, a, b, timeframe, window)
    row = corr_store.latest_row(db, sid, at_or_before=ts) if sid is not None else None
    if sid is not None and row is not None and row[0] == ts and row[1]["value"] is not None:
        st = q.standing(db, sid, ts, float(row[1]["value"]), timeframe)
        if st is not None:
            out |= {"corr": float(row[1]["value"]), "pctile": st.percentile,
                    "pctile_since": float(pd.Timestamp(st.since).year), "pctile_n": float(st.n)}
    near = nearest_decision(ts, cfg.telegram.fomc_sessions)
    if near is not None:
        out |= {"fomc_ts": float(near[0].ts), "fomc_sessions": float(near[1])}
    return out


def check_lag(max_lag: int) -> int:
    if not 1 <= max_lag <= 20:
        raise BadWindowError(f"lags must be between 1 and 20, got {max_lag}")
    return max_lag
