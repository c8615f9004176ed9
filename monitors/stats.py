"""Correlation math on return arrays: window Pearson, Fisher-z CI, beta, EWMA. Pure numpy.

All functions are vectorised over rows (one row per pair) so the engine can update
thousands of pairs with a handful of array operations.
"""

from __future__ import annotations

import numpy as np

# Φ⁻¹(0.975): the two-sided 95% normal quantile (statistics.NormalDist().inv_cdf(0.975)).
Z95 = 1.959963984540054

# Order of the EWMA sufficient statistics kept per pair.
EW_W, EW_X, EW_Y, EW_XX, EW_YY, EW_XY = range(6)


def window_stats(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pearson r, its 95% CI (lo, hi) and the beta of x on y, one value per row.

    ``x``, ``y``: shape (pairs, window). Two-pass (centred) sums, so no cancellation.
    Beta is cov(x, y) / var(y): the crypto asset (x) regressed on the equity asset (y).
    Rows with zero variance give NaN.
    """
    n = x.shape[1]
    dx = x - x.mean(axis=1, keepdims=True)
    dy = y - y.mean(axis=1, keepdims=True)
    sxx = np.einsum("ij,ij->i", dx, dx)
    syy = np.einsum("ij,ij->i", dy, dy)
    sxy = np.einsum("ij,ij->i", dx, dy)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = sxy / np.sqrt(sxx * syy)
        beta = sxy / syy
    lo, hi = fisher_ci(r, n)
    return r, lo, hi, beta


def fisher_ci(r: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """95% CI of a Pearson r from n observations: tanh(atanh r ± z/√(n−3))."""
    if n <= 3:
        nan = np.full_like(r, np.nan)
        return nan, nan
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.arctanh(np.clip(r, -1.0, 1.0))
    half = Z95 / np.sqrt(n - 3)
    return np.tanh(z - half), np.tanh(z + half)


def ewma_push(state: np.ndarray, x: np.ndarray, y: np.ndarray, lam: float) -> None:
    """Decay the per-row EWMA sums by λ and add one observation (in place).

    With weights λ^k on the k-th most recent return this equals pandas
    ``ewm(alpha=1-λ, adjust=True)`` (bias=True moments), the form pandas uses for corr.
    """
    state *= lam
    state[:, EW_W] += 1.0
    state[:, EW_X] += x
    state[:, EW_Y] += y
    state[:, EW_XX] += x * x
    state[:, EW_YY] += y * y
    state[:, EW_XY] += x * y


def ewma_corr(state: np.ndarray) -> np.ndarray:
    w = state[:, EW_W]
    mx, my = state[:, EW_X] / w, state[:, EW_Y] / w
    vx = state[:, EW_XX] / w - mx * mx
    vy = state[:, EW_YY] / w - my * my
    cxy = state[:, EW_XY] / w - mx * my
    with np.errstate(divide="ignore", invalid="ignore"):
        out: np.ndarray = cxy / np.sqrt(vx * vy)
    return out


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two 1-D arrays (NaN if fewer than 3 points or zero variance)."""
    if len(x) < 3:
        return float("nan")
    r, _, _, _ = window_stats(x[None, :], y[None, :])
    return float(r[0])
