"""Independent pandas reference computations for the tests (deliberately not our code).

Own CSV reads, own joins, ``np.log(...).diff()``, ``rolling(N).corr``, ``ewm``: nothing
here imports corrbot modules, so agreement means two implementations agree.
"""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

Z = NormalDist().inv_cdf(0.975)


def daily_close(path: Path) -> pd.Series:
    df = pd.read_csv(path)
    col = "Adj Close" if "Adj Close" in df.columns else "Close"
    return pd.Series(df[col].to_numpy(float), index=pd.DatetimeIndex(pd.to_datetime(df["Date"].str[:10])))


def basket(members: dict[str, pd.Series], weights: dict[str, float]) -> pd.Series:
    m = pd.concat(members, axis=1, join="inner").sort_index()
    w = pd.Series(weights) / sum(weights.values())
    ret = (m.pct_change().iloc[1:] * w).sum(axis=1)
    return pd.concat([pd.Series([100.0], index=m.index[:1]), 100.0 * (1 + ret).cumprod()])


def expected(a: pd.Series, b: pd.Series, window: int, lam: float, same_session=None) -> pd.DataFrame:
    """value, ci_lo, ci_hi, beta, ewma per return timestamp of the aligned pair."""
    j = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").sort_index()
    r = np.log(j).diff().iloc[1:]
    if same_session is not None:
        r = r[same_session(j.index)[1:]]
    x, y = r["a"], r["b"]
    value = x.rolling(window).corr(y)
    half = Z / np.sqrt(window - 3)
    z = np.arctanh(value)
    return pd.DataFrame(
        {
            "value": value,
            "ci_lo": np.tanh(z - half),
            "ci_hi": np.tanh(z + half),
            "beta": x.rolling(window).cov(y) / y.rolling(window).var(),
            "ewma": x.ewm(alpha=1 - lam).corr(y).where(value.notna()),
            "n": np.minimum(np.arange(1, len(r) + 1), window),
        }
    )


def divergence_last(a: pd.Series, b: pd.Series, window: int, horizon: int) -> dict[str, float]:
    """The divergence rule's numbers for the last bar, straight from pandas: aligned log returns,
    β and ρ over the `window` returns before the last `horizon`, residual sd with ddof=1."""
    j = pd.concat([a.rename("c"), b.rename("e")], axis=1, join="inner").sort_index()
    r = np.log(j).diff().iloc[1:]
    est, recent = r.iloc[-(window + horizon):-horizon], r.iloc[-horizon:]
    beta = est["c"].cov(est["e"]) / est["e"].var()
    resid_sd = (est["c"] - beta * est["e"]).std(ddof=1)
    r_c, r_e = recent["c"].sum(), recent["e"].sum()
    residual = r_c - beta * r_e
    return {"r_a": r_c, "r_b": r_e, "expected": beta * r_e, "residual": residual, "beta": beta,
            "rho": est["c"].corr(est["e"]), "z": residual / (resid_sd * np.sqrt(horizon))}
