"""The quant's next questions, as pure functions on return and correlation arrays (no I/O).

* `percentile_of` — where a value stands in its own history (share of values at or below it).
* `lead_lag` — Pearson r of crypto returns with equity returns k bars later, k = −K … +K,
  each with its Fisher-z 95% CI over the pairs that overlap at that lag.
* `dimson_beta` — the beta corrected for asynchronous trading (Dimson 1979): regress crypto
  returns on the same-bar and the previous-bar equity returns and add the two slopes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitors.stats import fisher_ci, pearson


def percentile_of(history: np.ndarray, value: float) -> float:
    """100 × the share of ``history`` (NaN ignored) that is ≤ ``value``; NaN if empty.

    ``history`` should include ``value`` itself, so the highest value ever is the 100th
    percentile and the lowest of n values is the 100/n-th.
    """
    h = history[np.isfinite(history)]
    if h.size == 0 or not np.isfinite(value):
        return float("nan")
    return float(100.0 * np.count_nonzero(h <= value) / h.size)


@dataclass(frozen=True)
class LagRow:
    lag: int  # > 0: crypto leads (its return at t vs the equity return at t + lag)
    r: float
    lo: float
    hi: float
    n: int


def lead_lag(x: np.ndarray, y: np.ndarray, max_lag: int) -> list[LagRow]:
    """Correlation of x[t] with y[t + k] for k in −max_lag … +max_lag.

    ``x`` (crypto) and ``y`` (equity) are aligned return arrays of equal length. A positive k
    pairs today's crypto return with the equity return k bars later: a peak there means
    crypto moves first. Each k uses the len − |k| pairs that exist (no padding).
    """
    out = []
    n = len(x)
    for k in range(-max_lag, max_lag + 1):
        if k >= 0:
            xs, ys = x[: n - k], y[k:]
        else:
            xs, ys = x[-k:], y[: n + k]
        m = len(xs)
        r = pearson(xs, ys) if m >= 3 else float("nan")
        lo, hi = fisher_ci(np.array([r]), m)
        out.append(LagRow(k, r, float(lo[0]), float(hi[0]), m))
    return out


def dimson_beta(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(Dimson beta, slope on y[t], slope on y[t−1]) from OLS of x[t] on 1, y[t], y[t−1].

    Uses the len − 1 bars that have a previous bar. NaNs if fewer than 4 such bars or the
    regressors are collinear.
    """
    if len(x) < 5:
        return float("nan"), float("nan"), float("nan")
    xt = x[1:]
    design = np.column_stack([np.ones(len(xt)), y[1:], y[:-1]])
    coef, _, rank, _ = np.linalg.lstsq(design, xt, rcond=None)
    if rank < 3:
        return float("nan"), float("nan"), float("nan")
    b0, b1 = float(coef[1]), float(coef[2])
    return b0 + b1, b0, b1
