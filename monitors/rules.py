"""Per-bar signals of the alert rules (level, jump, z-score, divergence), all pairs at once. Pure numpy.

Each function takes one row per pair and returns a `Signal`: per pair × evaluated bar, the
value the rule measures, `trigger` (beyond the firing threshold) and `clear` (back inside the
clearing threshold). The firing/resolving state machine lives elsewhere and only sees these.

Inputs carry their own context: the last T columns are the bars to evaluate, preceded by the
columns the rule looks back on. A live update is the same call with T = 1 (e.g. the last
``window + horizon`` returns of one pair for `divergence_signal`; a 1-D array is one pair) and
a backfill is one call with T = every bar, so live and history cannot disagree. Missing input
(NaN; for returns also ±inf, the log of a zero price) anywhere a bar depends on gives value
NaN, trigger False and clear False.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Direction = Literal["up", "down", "both"]

FISHER_CLIP = 0.999999  # keeps atanh finite for |ρ| = 1
_DIRECT_T = 8  # up to this many bars, window sums are plain reductions (the live T = 1 path)
_CHUNK = 128  # bars per cumulative-sum block beyond that: bounds rounding growth and memory
_REFINE = 1e-3  # centred sum below this share of the raw sums it came from: recompute two-pass
_GATHER = 1 << 21  # elements per batch when recomputing flagged windows
_BLOCK = 1 << 16  # elements per row block of the z-score (≈ 0.5 MB, fits in L2)
_PERFECT_FIT = 1e-12  # 1 − ρ² below this: the residuals are rounding noise, not a scale


@dataclass(frozen=True)
class Signal:
    """Per pair × bar: the value the rule measures, whether it is beyond the firing threshold
    (`trigger`) and whether it is back inside the clearing threshold (`clear`). NaN value ->
    trigger False and clear False (no information: the state machine freezes)."""

    value: np.ndarray  # float (P, T)
    trigger: np.ndarray  # bool (P, T)
    clear: np.ndarray  # bool (P, T)
    detail: dict[str, np.ndarray]  # extra float (P, T) arrays shown in messages


def level_signal(
    rho: np.ndarray,
    *,
    above: float | None = None,
    clear_below: float | None = None,
    below: float | None = None,
    clear_above: float | None = None,
) -> Signal:
    """ρ at or beyond a level: ``above`` (coupling) or ``below`` (decoupling), with hysteresis."""
    r, _ = _rows(rho, "rho", 0)
    if (above is None) == (below is None):
        raise ValueError("give exactly one of above= or below=")
    if above is not None:
        if clear_above is not None:
            raise ValueError("clear_above= goes with below=, not above=")
        lo = above - 0.1 if clear_below is None else clear_below
        if not lo <= above:
            raise ValueError(f"clear_below ({lo}) must not exceed above ({above})")
        return Signal(r.copy(), r >= above, r < lo, {})
    assert below is not None
    if clear_below is not None:
        raise ValueError("clear_below= goes with above=, not below=")
    hi = below + 0.1 if clear_above is None else clear_above
    if not hi >= below:
        raise ValueError(f"clear_above ({hi}) must not be under below ({below})")
    return Signal(r.copy(), r <= below, r > hi, {})


def jump_signal(
    rho: np.ndarray, *, lookback: int, delta: float, direction: Direction = "both", clear_delta: float | None = None
) -> Signal:
    """Change of ρ over ``lookback`` columns; ``rho`` is (P, T + lookback)."""
    if lookback < 1:
        raise ValueError("lookback must be >= 1")
    clear_delta = _thresholds(delta, clear_delta, direction, "delta")
    r, t = _rows(rho, "rho", lookback)
    now, before = r[:, lookback:], r[:, :t]
    with np.errstate(invalid="ignore"):
        change = now - before
    trigger, clear = _directional(change, delta, clear_delta, direction)
    return Signal(change, trigger, clear, {"rho": now.copy(), "rho_before": before.copy()})


def zscore_signal(
    rho: np.ndarray, *, history: int, z: float, direction: Direction = "both", clear_z: float | None = None
) -> Signal:
    """Fisher-z of ρ against its previous ``history`` values; ``rho`` is (P, T + history)."""
    if history < 2:
        raise ValueError("history must be >= 2 (a standard deviation needs two values)")
    clear_z = _thresholds(z, clear_z, direction, "z")
    r, t = _rows(rho, "rho", history)
    zs, mean = np.empty((r.shape[0], t)), np.empty((r.shape[0], t))
    # Row blocks small enough to stay in cache: atanh of every history value is the bulk of
    # the live path, and its sums then read it while it is still there.
    rows = max(64, _BLOCK // r.shape[1]) if r.shape[1] else 1
    for i in range(0, r.shape[0], rows):
        f = np.clip(r[i : i + rows], -FISHER_CLIP, FISHER_CLIP)
        np.arctanh(f, out=f)
        mean[i : i + rows], css = _moments(f[:, : t + history - 1], None, history, t)
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = (f[:, history:] - mean[i : i + rows]) / np.sqrt(css / (history - 1))
        zs[i : i + rows] = np.where(css > 0, dev, np.nan)
    mean_rho = np.tanh(mean)
    trigger, clear = _directional(zs, z, clear_z, direction)
    return Signal(zs, trigger, clear, {"rho": r[:, history:].copy(), "mean_rho": mean_rho})


def divergence_signal(
    c: np.ndarray,
    e: np.ndarray,
    *,
    window: int,
    horizon: int,
    z: float,
    min_corr: float,
    direction: Direction = "both",
    clear_z: float | None = None,
) -> Signal:
    """How far the crypto leg moved beyond β × the equity leg over the last ``horizon`` returns.

    ``c``, ``e``: aligned log returns, (P, T + window + horizon − 1). β, ρ and the residual
    scale s come from the ``window`` returns ending ``horizon`` bars before each bar, so a sharp
    divergence cannot hide itself by bending its own estimate. A constant leg in that block
    (zero variance) leaves ρ, β and s undefined: NaN. A perfect fit (s = 0) has no scale:
    value NaN.
    """
    if window < 3 or horizon < 1:
        raise ValueError("window must be >= 3 and horizon >= 1")
    clear_z = _thresholds(z, clear_z, direction, "z")
    ctx = window + horizon - 1
    cc, t = _rows(c, "c", ctx)
    ee, _ = _rows(e, "e", ctx)
    if cc.shape != ee.shape:
        raise ValueError(f"c and e differ in shape: {cc.shape} vs {ee.shape}")
    _, _, scc, see, sce, rss = _moments(cc[:, : t + window - 1], ee[:, : t + window - 1], window, t)
    mc, _ = _moments(cc[:, window:], None, horizon, t)
    me, _ = _moments(ee[:, window:], None, horizon, t)
    with np.errstate(divide="ignore", invalid="ignore"):
        r_c, r_e = mc * horizon, me * horizon
        ok = (scc > 0) & (see > 0)
        beta = np.where(ok, sce / see, np.nan)
        rho = np.where(ok, sce / np.sqrt(scc * see), np.nan)
        rss = np.maximum(rss, 0.0)  # Σ(resid − mean)², resid = c − β·e
        fit = ok & (rss > _PERFECT_FIT * scc)
        s = np.where(fit, np.sqrt(rss / (window - 1)), np.where(ok, 0.0, np.nan))
        expected = beta * r_e
        residual = r_c - expected
        zval = np.where(fit, residual / (s * np.sqrt(horizon)), np.nan)
    trigger, clear = _directional(zval, z, clear_z, direction)
    trigger &= rho >= min_corr
    detail = {"rho": rho, "beta": beta, "R_c": r_c, "R_e": r_e, "expected": expected, "residual": residual, "s": s}
    return Signal(zval, trigger, clear, detail)


# ---- helpers ----------------------------------------------------------------------------


def _rows(a: np.ndarray, name: str, context: int) -> tuple[np.ndarray, int]:
    """``a`` as float (P, N) and the number of evaluated bars T = N − context."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (pairs, bars), got shape {arr.shape}")
    t = arr.shape[1] - context
    if t < 0:
        if arr.shape[0] == 0:  # no pairs: nothing to evaluate, whatever the width
            return np.empty((0, context)), 0
        raise ValueError(f"{name} has {arr.shape[1]} columns; this rule needs at least {context}")
    return arr, t


def _thresholds(thr: float, clear: float | None, direction: str, name: str) -> float:
    """Validate a firing threshold and return the clearing one (default: half of it)."""
    if direction not in ("up", "down", "both"):
        raise ValueError(f"direction must be 'up', 'down' or 'both', not {direction!r}")
    if not thr > 0:
        raise ValueError(f"{name} must be > 0")
    c = thr / 2 if clear is None else clear
    # clear beyond the trigger would make a bar both firing and cleared; for 'both' a
    # non-positive band (|x| < c) could never clear.
    if not c <= thr or (direction == "both" and not c > 0):
        raise ValueError(f"clear_{name} must be in (0, {name}] (or <= {name} for up/down), got {c}")
    return c


def _directional(v: np.ndarray, thr: float, clear: float, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """(trigger, clear) of a signed value; NaN compares False to everything, as required."""
    if direction == "up":
        return v >= thr, v < clear
    if direction == "down":
        return v <= -thr, v > -clear
    a = np.abs(v)
    return a >= thr, a < clear


def _moments(x: np.ndarray, y: np.ndarray | None, n: int, t: int) -> list[np.ndarray]:
    """Window statistics for the T windows of ``n`` columns starting at columns 0..T−1.

    Returns [mean_x, css_x] or, with ``y``, [mean_x, mean_y, css_x, css_y, cross, rss] (css =
    centred sum of squares Σ(x − x̄)², cross = Σ(x − x̄)(y − ȳ), rss = css of x − β·y with
    β = cross / css_y), all (P, T). NaN where the window holds a NaN or ±inf (of either series).
    O(P × (T + n)): raw sums per window, by plain reductions for a few bars and by cumulative
    sums over blocks otherwise. Windows where those formulas cancel (variance tiny next to
    the mean square, constant windows above all; |ρ| near 1 for rss) are recomputed two-pass
    from the data, so a constant window gives exactly 0.
    """
    xs = [x] if y is None else [x, y]
    p = x.shape[0]
    means, sums, sq, scale = (
        [np.empty((p, t)) for _ in xs],
        [np.empty((p, t)) for _ in xs],
        [np.empty((p, t)) for _ in range(3 if y is not None else 1)],
        [np.empty((p, t)) for _ in xs],  # size of the sums of squares the rounding scales with
    )
    if t <= _DIRECT_T:
        for j in range(t):
            blk = [v[:, j : j + n] for v in xs]
            for k, b in enumerate(blk):
                # einsum, not sum(axis=1) (slow on short rows) nor a BLAS matvec (its threads
                # stall when other processes hold the CPUs)
                sums[k][:, j] = np.einsum("ij->i", b)
                sq[k][:, j] = scale[k][:, j] = np.einsum("ij,ij->i", b, b)
            if y is not None:
                sq[2][:, j] = np.einsum("ij,ij->i", blk[0], blk[1])
        with np.errstate(invalid="ignore"):
            for k in range(len(xs)):  # ±inf (log of a zero price) is missing data, like NaN
                means[k][:] = np.where(np.isfinite(sums[k]), sums[k] / n, np.nan)
    else:
        for s0 in range(0, t, _CHUNK):
            m = min(_CHUNK, t - s0)
            for acc, part in zip((means, sums, sq, scale), _block_sums(xs, n, s0, m), strict=True):
                for whole, piece in zip(acc, part, strict=True):
                    whole[:, s0 : s0 + m] = piece
    with np.errstate(invalid="ignore", divide="ignore"):
        css = [sq[k] - sums[k] * sums[k] / n for k in range(len(xs))]
        flag = css[0] <= _REFINE * scale[0]
        if y is not None:
            css.append(sq[2] - sums[0] * sums[1] / n)
            css.append(css[0] - css[2] * css[2] / css[1])
            # rss error ≲ ε(√S_x + |β|√S_y)²: it is a difference of terms that large
            err = (np.sqrt(scale[0]) + np.abs(css[2] / css[1]) * np.sqrt(scale[1])) ** 2
            flag |= (css[1] <= _REFINE * scale[1]) | ~(css[3] > _REFINE * err)
            bad = ~np.isfinite(css[0] + css[1] + css[2])  # a gap in one leg spoils the pair
            for a in (*means, *css):
                a[bad] = np.nan
            flag &= ~bad
    _refine(xs, n, np.nonzero(flag), means, css)
    return [*means, *css]


def _block_sums(xs: list[np.ndarray], n: int, s0: int, m: int) -> list[list[np.ndarray]]:
    """[means, sums, sq, scale] for windows s0..s0+m−1, from cumulative sums of block-centred data.

    A difference of two cumulative sums is off by a few ulps of the cumulative sum, not of the
    window's own sum: `scale` is the cumulative sum of squares at each window's end.
    """
    blk = [v[:, s0 : s0 + m + n - 1] for v in xs]
    bad = np.zeros(blk[0].shape, dtype=bool)
    for b in blk:
        bad |= ~np.isfinite(b)
    good = ~bad
    cnt = np.maximum(good.sum(axis=1), 1)
    # Centring on the block mean keeps the cumulative sums small, so their differences are exact
    # to a few ulps of the window's own magnitude.
    shift = [np.where(good, b, 0.0).sum(axis=1) / cnt for b in blk]
    d = [np.where(good, b - sh[:, None], 0.0) for b, sh in zip(blk, shift, strict=True)]
    sums = [_wsum(dk, n, m)[0] for dk in d]
    means = [sh[:, None] + sk / n for sh, sk in zip(shift, sums, strict=True)]
    sq, scale = map(list, zip(*(_wsum(dk * dk, n, m) for dk in d), strict=True))
    if len(d) == 2:
        sq.append(_wsum(d[0] * d[1], n, m)[0])
    nbad = _wsum(bad.astype(np.float64), n, m)[0] > 0
    for a in (*means, *sums, *sq):
        a[nbad] = np.nan
    return [means, sums, sq, scale]


def _wsum(a: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of the m windows of n columns of ``a`` (P, m + n − 1) by one cumulative sum, and
    that cumulative sum at each window's end."""
    cs = np.zeros((a.shape[0], a.shape[1] + 1))
    np.cumsum(a, axis=1, out=cs[:, 1:])
    return cs[:, n : n + m] - cs[:, :m], cs[:, n : n + m]


def _refine(
    xs: list[np.ndarray], n: int, where: tuple[np.ndarray, ...], means: list[np.ndarray], css: list[np.ndarray]
) -> None:
    """Two-pass statistics, shifted by each window's first value, for the flagged windows."""
    rows, starts = where
    step = max(1, _GATHER // n)
    cols = np.arange(n)
    for i in range(0, rows.size, step):
        r, s = rows[i : i + step], starts[i : i + step]
        idx = s[:, None] + cols
        d = []
        for k, v in enumerate(xs):
            w = v[r[:, None], idx]
            dk = w - w[:, :1]  # a constant window becomes exact zeros
            sk = dk.sum(axis=1)
            means[k][r, s] = w[:, 0] + sk / n
            d.append(dk - sk[:, None] / n)
            css[k][r, s] = np.einsum("ij,ij->i", d[k], d[k])
        if len(d) == 2:
            cross = np.einsum("ij,ij->i", d[0], d[1])
            css[2][r, s] = cross
            # Explicit residuals: css_x − cross²/css_y loses all digits as |ρ| → 1, these do not.
            with np.errstate(divide="ignore", invalid="ignore"):
                res = d[0] - (cross / css[1][r, s])[:, None] * d[1]
            css[3][r, s] = np.einsum("ij,ij->i", res, res)
