"""Independent pandas versions of the alert-rule signals (deliberately not monitors/rules.py).

One pair at a time, whole history, pandas idioms only: ``shift``, ``diff``, ``rolling(n)``
``mean/std/var/cov/corr/sum``. Every function returns a frame indexed like its input with
columns value, trigger, clear and the detail names; bars without enough context are NaN/False.
Nothing here imports corrbot, so agreement means two implementations agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def fire(v: pd.Series, thr: float, clr: float, direction: str) -> tuple[pd.Series, pd.Series]:
    """Trigger / clear masks of a signed value (NaN compares False)."""
    if direction == "up":
        return v.ge(thr), v.lt(clr)
    if direction == "down":
        return v.le(-thr), v.gt(-clr)
    return v.abs().ge(thr), v.abs().lt(clr)


def level(
    rho: pd.Series,
    above: float | None = None,
    clear_below: float | None = None,
    below: float | None = None,
    clear_above: float | None = None,
) -> pd.DataFrame:
    if above is not None:
        lo = above - 0.1 if clear_below is None else clear_below
        return pd.DataFrame({"value": rho, "trigger": rho.ge(above), "clear": rho.lt(lo)})
    assert below is not None
    hi = below + 0.1 if clear_above is None else clear_above
    return pd.DataFrame({"value": rho, "trigger": rho.le(below), "clear": rho.gt(hi)})


def jump(
    rho: pd.Series, lookback: int, delta: float, direction: str = "both", clear_delta: float | None = None
) -> pd.DataFrame:
    change = rho.diff(lookback)
    trig, clr = fire(change, delta, delta / 2 if clear_delta is None else clear_delta, direction)
    return pd.DataFrame({"value": change, "trigger": trig, "clear": clr, "rho": rho, "rho_before": rho.shift(lookback)})


def zscore(
    rho: pd.Series, history: int, z: float, direction: str = "both", clear_z: float | None = None
) -> pd.DataFrame:
    f = pd.Series(np.arctanh(rho.clip(-0.999999, 0.999999)), index=rho.index)
    mean = f.rolling(history).mean().shift(1)
    sd = f.rolling(history).std().shift(1)
    zs = ((f - mean) / sd).where(sd > 0)
    trig, clr = fire(zs, z, z / 2 if clear_z is None else clear_z, direction)
    return pd.DataFrame(
        {"value": zs, "trigger": trig, "clear": clr, "rho": rho, "mean_rho": pd.Series(np.tanh(mean), index=rho.index)}
    )


def divergence(
    c: pd.Series,
    e: pd.Series,
    window: int,
    horizon: int,
    z: float,
    min_corr: float,
    direction: str = "both",
    clear_z: float | None = None,
) -> pd.DataFrame:
    """β, ρ, s on the `window` returns ending `horizon` bars back; sums over the last `horizon`."""
    var_c = c.rolling(window).var()
    var_e = e.rolling(window).var()
    cov = c.rolling(window).cov(e)
    degenerate = var_c.eq(0) | var_e.eq(0)
    # var(c − β·e) with β = cov / var(e) is var(c) − cov² / var(e) (same ddof).
    est = pd.DataFrame(
        {
            "rho": c.rolling(window).corr(e),
            "beta": cov / var_e,
            "s": np.sqrt((var_c - cov**2 / var_e).clip(lower=0.0)),
        }
    )
    est = est.mask(degenerate, np.nan).shift(horizon)  # the block ends `horizon` bars back
    r_c = c.rolling(horizon).sum()
    r_e = e.rolling(horizon).sum()
    expected = est["beta"] * r_e
    residual = r_c - expected
    zval = residual / (est["s"] * np.sqrt(horizon))
    trig, clr = fire(zval, z, z / 2 if clear_z is None else clear_z, direction)
    return pd.DataFrame(
        {
            "value": zval,
            "trigger": trig & est["rho"].ge(min_corr),
            "clear": clr,
            "rho": est["rho"],
            "beta": est["beta"],
            "R_c": r_c,
            "R_e": r_e,
            "expected": expected,
            "residual": residual,
            "s": est["s"],
        }
    )
