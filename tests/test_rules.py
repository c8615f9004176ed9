"""Alert-rule signals (monitors/rules.py) against an independent pandas version, on the real data.

Inputs are the stored w30/w90 correlation series and the aligned daily log returns of the
bundled demo data; tests/rules_reference.py recomputes every value, trigger, clear and detail
with pandas idioms over the whole history. Then planted events on real returns, edge cases,
and a property test that evaluating T bars at once equals evaluating each bar alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rules_reference as ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitors.align import pair_returns
from monitors.rules import Signal, divergence_signal, jump_signal, level_signal, zscore_signal
from service.demo import build_demo_db
from service.pipeline import build_panel
from service.queries import divergence as diverge_query
from storage import corr as corr_store
from storage.db import open_db

TOL = 1e-9
PAIRS = [("BTC", "IWM"), ("ETH", "SMALLCAP_TECH"), ("ALTS", "QQQ"), ("SOL", "PSCT")]
DETAIL = {
    "level": set(),
    "jump": {"rho", "rho_before"},
    "zscore": {"rho", "mean_rho"},
    "divergence": {"rho", "beta", "R_c", "R_e", "expected", "residual", "s"},
}


def run(fn: Callable[..., Signal], *args: Any, **kw: Any) -> Signal:
    """Call a rule with every warning (RuntimeWarning above all) turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kw)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("rules") / "demo.db"
    cfg = build_demo_db(path)
    db = open_db(path)
    rho: dict[tuple[str, str, int], pd.Series] = {}
    for a, b in PAIRS:
        for w in (30, 90):
            sid = corr_store.find_series(db, a, b, "1d", w)
            assert sid is not None
            rho[(a, b, w)] = corr_store.read_series(db, sid)["value"]
    panel = build_panel(db, cfg, "1d")
    rets = {(a, b): pair_returns(panel[a].dropna(), panel[b].dropna(), "1d") for a, b in PAIRS}
    return {"cfg": cfg, "db": db, "rho": rho, "rets": rets}


def compare(
    sig: Signal, exp: pd.DataFrame, kind: str, thresholds: list[float], corr_floor: float | None = None
) -> None:
    """Signal (1, T) vs the reference's last T rows: every array to TOL, booleans exactly.

    Bars whose value sits within TOL of a threshold (or whose ρ is within TOL of the divergence
    ρ floor) are left out of the boolean check, where rounding may legitimately decide; there
    must be almost none.
    """
    t = sig.value.shape[1]
    exp = exp.iloc[len(exp) - t :]
    assert set(sig.detail) == DETAIL[kind]
    for name, got in [("value", sig.value), *sig.detail.items()]:
        g, e = got[0], exp[name].to_numpy(dtype=float)
        assert got.shape == (1, t)
        assert np.array_equal(np.isnan(g), np.isnan(e)), name
        ok = ~np.isnan(g)
        np.testing.assert_allclose(g[ok], e[ok], rtol=0, atol=TOL, err_msg=name)
    v = sig.value[0]
    tie = np.zeros(t, dtype=bool)
    for thr in thresholds:
        tie |= np.abs(np.abs(v) - abs(thr)) < TOL
    if corr_floor is not None:
        tie |= np.abs(sig.detail["rho"][0] - corr_floor) < TOL
    assert tie.sum() <= 2
    for name, got in (("trigger", sig.trigger), ("clear", sig.clear)):
        assert got.dtype == bool and got.shape == (1, t)
        np.testing.assert_array_equal(got[0][~tie], exp[name].to_numpy(dtype=bool)[~tie], err_msg=name)


def row(s: pd.Series) -> np.ndarray:
    return s.to_numpy(dtype=float)[None, :]


# ---- real data vs pandas ----------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("w", [30, 90])
@pytest.mark.parametrize(
    "kw",
    [{"above": 0.4}, {"above": 0.6, "clear_below": 0.3}, {"below": 0.0}, {"below": -0.1, "clear_above": 0.2}],
)
def test_level_matches_pandas(real: dict[str, Any], pair: tuple[str, str], w: int, kw: dict[str, float]) -> None:
    rho = real["rho"][(*pair, w)]
    sig = run(level_signal, row(rho), **kw)
    compare(sig, ref.level(rho, **kw), "level", [])
    assert sig.value.shape == (1, len(rho))


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("w", [30, 90])
@pytest.mark.parametrize(("lookback", "delta", "clear_delta"), [(1, 0.05, None), (5, 0.2, None), (20, 0.3, 0.05)])
@pytest.mark.parametrize("direction", ["up", "down", "both"])
def test_jump_matches_pandas(
    real: dict[str, Any],
    pair: tuple[str, str],
    w: int,
    lookback: int,
    delta: float,
    clear_delta: float | None,
    direction: str,
) -> None:
    rho = real["rho"][(*pair, w)]
    kw = {"lookback": lookback, "delta": delta, "direction": direction, "clear_delta": clear_delta}
    sig = run(jump_signal, row(rho), **kw)
    assert sig.value.shape == (1, len(rho) - lookback)
    compare(sig, ref.jump(rho, **kw), "jump", [delta, delta / 2 if clear_delta is None else clear_delta])
    if w == 30 and direction == "both":  # the comparison covers firing bars, not just quiet ones
        assert sig.trigger.any()


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("w", [30, 90])
@pytest.mark.parametrize(("history", "z", "clear_z"), [(20, 2.0, None), (60, 1.5, 0.5), (252, 2.5, None)])
@pytest.mark.parametrize("direction", ["up", "down", "both"])
def test_zscore_matches_pandas(
    real: dict[str, Any], pair: tuple[str, str], w: int, history: int, z: float, clear_z: float | None, direction: str
) -> None:
    rho = real["rho"][(*pair, w)]
    kw = {"history": history, "z": z, "direction": direction, "clear_z": clear_z}
    exp = ref.zscore(rho, **kw)
    sig = run(zscore_signal, row(rho), **kw)
    compare(sig, exp, "zscore", [z, z / 2 if clear_z is None else clear_z])
    assert np.isfinite(sig.value).sum() > 300
    # The live path (a few bars: plain reductions) agrees with pandas too.
    for t in (1, 5):
        compare(run(zscore_signal, row(rho)[:, -(history + t) :], **kw), exp, "zscore", [z, clear_z or z / 2])


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize(
    ("window", "horizon", "z", "min_corr", "clear_z"),
    [(60, 3, 2.0, 0.2, None), (30, 1, 2.5, 0.0, 1.0), (90, 5, 1.5, 0.3, None), (20, 10, 2.0, -1.0, 0.5)],
)
@pytest.mark.parametrize("direction", ["up", "down", "both"])
def test_divergence_matches_pandas(
    real: dict[str, Any],
    pair: tuple[str, str],
    window: int,
    horizon: int,
    z: float,
    min_corr: float,
    clear_z: float | None,
    direction: str,
) -> None:
    r = real["rets"][pair]
    kw = {"window": window, "horizon": horizon, "z": z, "min_corr": min_corr, "direction": direction}
    exp = ref.divergence(r["x"], r["y"], clear_z=clear_z, **kw)
    c, e = row(r["x"]), row(r["y"])
    sig = run(divergence_signal, c, e, clear_z=clear_z, **kw)
    assert sig.value.shape == (1, len(r) - window - horizon + 1)
    thr = [z, z / 2 if clear_z is None else clear_z]
    compare(sig, exp, "divergence", thr, min_corr)
    assert sig.trigger.any() and sig.clear.any()
    for t in (1, 4):
        ctx = window + horizon - 1 + t
        compare(
            run(divergence_signal, c[:, -ctx:], e[:, -ctx:], clear_z=clear_z, **kw), exp, "divergence", thr, min_corr
        )


@pytest.mark.parametrize("pair", [("BTC", "IWM"), ("ETH", "SMALLCAP_TECH")])
def test_divergence_t1_equals_diverge_command(real: dict[str, Any], pair: tuple[str, str]) -> None:
    """/diverge (service.queries.divergence) and the T = 1 signal report the same numbers
    (no divergence rule configured: the default window and a 3-bar horizon)."""
    cfg, db = real["cfg"], real["db"]
    bars = 3
    q = diverge_query(db, cfg, *pair)
    assert (q.window, q.bars) == (cfg.default_window("1d"), bars)
    r = real["rets"][pair]
    w = cfg.default_window("1d")
    sig = run(
        divergence_signal,
        r["x"].to_numpy()[-(w + bars) :],
        r["y"].to_numpy()[-(w + bars) :],
        window=w,
        horizon=bars,
        z=2.0,
        min_corr=0.0,
    )
    assert sig.value.shape == (1, 1)
    assert q.zscore is not None
    assert sig.value[0, 0] == pytest.approx(q.zscore, abs=1e-12)
    assert sig.detail["residual"][0, 0] == pytest.approx(q.residual, abs=1e-12)
    assert sig.detail["beta"][0, 0] == pytest.approx(q.beta, abs=1e-12)


# ---- planted events ---------------------------------------------------------------------


def test_planted_btc_jump_triggers_exactly_while_in_the_recent_block(real: dict[str, Any]) -> None:
    """+15% one-day BTC move planted on 2022-12-06 (a calm stretch of BTC/IWM, ρ ≈ 0.6)."""
    r = real["rets"][("BTC", "IWM")]
    window, horizon, z, clear_z = 60, 3, 2.0, 1.0
    kw = {"window": window, "horizon": horizon, "z": z, "min_corr": 0.2, "clear_z": clear_z}
    dates = pd.to_datetime(r.index, unit="s")
    i = int(np.flatnonzero(dates == pd.Timestamp("2022-12-06"))[0])
    t = i - (window + horizon - 1)  # the planted bar's column in the signal
    c, e = r["x"].to_numpy(), r["y"].to_numpy()
    planted = c.copy()
    planted[i] += np.log(1.15)
    base = run(divergence_signal, c, e, **kw)
    sig = run(divergence_signal, planted, e, **kw)
    near = slice(t - 15, t + horizon + 15)
    # Precondition: nothing fires nearby without the plant, everything is cleared.
    assert not base.trigger[0, near].any() and base.clear[0, near].all()
    fired = np.flatnonzero(sig.trigger[0, near]) + near.start
    assert list(fired) == list(range(t, t + horizon))
    assert sig.clear[0, t - 15 : t].all() and sig.clear[0, t + horizon : near.stop].all()
    assert not sig.clear[0, t : t + horizon].any()
    # While the plant is only in the recent block, β is untouched: residual moves by exactly it.
    bump = sig.detail["residual"][0, t : t + horizon] - base.detail["residual"][0, t : t + horizon]
    np.testing.assert_allclose(bump, np.log(1.15), rtol=0, atol=1e-12)
    assert (sig.value[0, t : t + horizon] > 3.0).all()
    # A rise does not fire a "down" rule; an "up" rule sees the same bars.
    assert not run(divergence_signal, planted, e, direction="down", **kw).trigger[0, near].any()
    up = run(divergence_signal, planted, e, direction="up", **kw)
    assert list(np.flatnonzero(up.trigger[0, near]) + near.start) == list(fired)
    # Everything before the plant is untouched.
    np.testing.assert_allclose(sig.value[0, :t], base.value[0, :t], rtol=0, atol=1e-12)


def test_level_crossings_of_btc_iwm_w30(real: dict[str, Any]) -> None:
    rho = real["rho"][("BTC", "IWM", 30)]
    dates = pd.to_datetime(rho.index, unit="s")
    up = rho.ge(0.6) & ~rho.shift(1).ge(0.6)  # pandas: the sessions where ρ crosses 0.6 upward
    back = rho.lt(0.5) & ~rho.shift(1).lt(0.5)
    sig = run(level_signal, row(rho), above=0.6, clear_below=0.5)
    trig, clr = sig.trigger[0], sig.clear[0]
    rise = trig & ~np.concatenate([[False], trig[:-1]])
    fall = clr & ~np.concatenate([[False], clr[:-1]])
    assert list(dates[rise]) == list(dates[up.to_numpy()])
    assert list(dates[fall]) == list(dates[back.to_numpy()])
    assert 3 <= rise.sum() <= 60
    assert not (trig & clr).any()


# ---- edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("gap", [np.nan, np.inf, -np.inf])
def test_gap_spoils_exactly_the_bars_that_use_it(real: dict[str, Any], gap: float) -> None:
    """A missing return (NaN, or ±inf from a zero price) blanks the bars whose blocks hold it."""
    r = real["rets"][("ETH", "SMALLCAP_TECH")]
    c, e = row(r["x"]), row(r["y"])
    window, horizon = 40, 4
    kw = {"window": window, "horizon": horizon, "z": 2.0, "min_corr": 0.0}
    ctx = window + horizon - 1
    k = 700  # the missing return's column
    base = run(divergence_signal, c, e, **kw)
    for leg in (0, 1):
        cg, eg = c.copy(), e.copy()
        (cg, eg)[leg][0, k] = gap
        sig = run(divergence_signal, cg, eg, **kw)
        cols = np.arange(sig.value.shape[1]) + ctx
        hit = (cols >= k) & (cols <= k + horizon + window - 1)  # k in the recent or estimation block
        assert np.isnan(sig.value[0, hit]).all() and not (sig.trigger[0, hit] | sig.clear[0, hit]).any()
        np.testing.assert_allclose(sig.value[0, ~hit], base.value[0, ~hit], rtol=0, atol=1e-12)
        # Only the leg with the gap loses its sum.
        recent = (cols >= k) & (cols <= k + horizon - 1)
        assert np.isnan(sig.detail[("R_c", "R_e")[leg]][0, recent]).all()
        assert np.isfinite(sig.detail[("R_e", "R_c")[leg]][0, recent]).all()
        for i in (k - 1, k, k + horizon, k + horizon + window - 1, k + horizon + window):  # live, T = 1
            one = run(divergence_signal, cg[:, i - ctx : i + 1], eg[:, i - ctx : i + 1], **kw)
            np.testing.assert_allclose(one.value[0], sig.value[0, i - ctx : i - ctx + 1], rtol=1e-12)
    rho = real["rho"][("BTC", "IWM", 30)].to_numpy()[None, :].copy()
    rho[0, 500] = np.nan
    zs = run(zscore_signal, rho, history=50, z=2.0)
    cols = np.arange(zs.value.shape[1]) + 50
    hit = (cols >= 500) & (cols <= 550)
    assert np.isnan(zs.value[0, hit]).all() and np.isfinite(zs.value[0, ~hit & (cols > 130)]).all()
    assert np.isnan(run(jump_signal, rho, lookback=5, delta=0.1).value[0, [495, 500]]).all()


def test_zero_variance_and_perfect_fit_give_nan_not_inf() -> None:
    rng = np.random.default_rng(7)
    n = 50
    e = rng.normal(0, 0.01, (4, n))
    c = rng.normal(0, 0.03, (4, n))
    e[0, :] = 0.0  # equity flat (halted): no β
    c[1, :] = 0.002  # constant crypto leg: no ρ
    c[2] = 1.5 * e[2]  # perfect fit: no residual scale
    for t in (1, n - 22):  # the live path and the cumulative-sum path
        sig = run(divergence_signal, c[:, -(21 + t) :], e[:, -(21 + t) :], window=20, horizon=2, z=2.0, min_corr=0.0)
        assert np.isnan(sig.value[:3]).all() and np.isfinite(sig.value[3]).all()
        assert not (sig.trigger[:3] | sig.clear[:3]).any()
        for k in ("rho", "beta", "s"):
            assert np.isnan(sig.detail[k][:2]).all()
        np.testing.assert_allclose(sig.detail["beta"][2], 1.5, rtol=1e-12)
        assert (sig.detail["s"][2] == 0.0).all()
    flat = np.full((2, 300), 0.35)
    flat[1, -1] = 0.5  # the new bar moves, but the history has no spread
    for t in (1, 40):
        zs = run(zscore_signal, flat[:, -(252 + t) :], history=252, z=2.0)
        assert np.isnan(zs.value).all() and not zs.trigger.any() and not zs.clear.any()
        np.testing.assert_allclose(zs.detail["mean_rho"], 0.35, rtol=1e-15)


@pytest.mark.parametrize("history", [2, 5, 20, 60, 252])
def test_constant_history_is_exactly_zero_spread(history: int) -> None:
    """Raw sums leave rounding crumbs on flat windows; the rules must see exactly no spread."""
    vals = np.linspace(-0.99, 0.99, 199)[:, None]
    rng = np.random.default_rng(history)
    noisy = np.tanh(rng.normal(0, 0.5, (199, 3 * history + 300)))
    # A flat stretch long enough for 41 windows, inside otherwise varying data.
    noisy[:, 150 : 150 + history + 40] = vals
    for t in (1, 5, 40):  # the live path
        flat = np.repeat(vals, history + t, axis=1)
        assert np.isnan(run(zscore_signal, flat, history=history, z=2.0).value).all()
    sig = run(zscore_signal, noisy, history=history, z=2.0)  # the block path
    assert np.isnan(sig.value[:, 150 : 150 + 41]).all()
    assert np.isfinite(sig.value[:, :150]).all()
    if history >= 5:
        e = rng.normal(0, 0.01, (199, 3 * history + 300))
        c = np.repeat(vals / 10, e.shape[1], axis=1)  # constant crypto returns
        for t in (1, 4, e.shape[1] - history - 1):
            d = run(
                divergence_signal,
                c[:, -(history + 1 + t) :],
                e[:, -(history + 1 + t) :],
                window=history,
                horizon=2,
                z=2.0,
                min_corr=-1.0,
            )
            assert np.isnan(d.value).all() and np.isnan(d.detail["rho"]).all()


def test_minimum_context_and_empty_shapes() -> None:
    rng = np.random.default_rng(3)
    rho = np.tanh(rng.normal(0.3, 0.2, (3, 253)))
    c, e = rng.normal(0, 0.02, (2, 3, 70))
    cases: list[tuple[Callable[..., Signal], tuple[np.ndarray, ...], dict[str, Any], int]] = [
        (level_signal, (rho,), {"above": 0.5}, 0),
        (jump_signal, (rho,), {"lookback": 5, "delta": 0.1}, 5),
        (zscore_signal, (rho,), {"history": 252, "z": 2.0}, 252),
        (divergence_signal, (c, e), {"window": 60, "horizon": 3, "z": 2.0, "min_corr": 0.1}, 62),
    ]
    for fn, arrays, kw, ctx in cases:
        one = run(fn, *(a[:, -(ctx + 1) :] if ctx else a[:, -1:] for a in arrays), **kw)
        assert one.value.shape == one.trigger.shape == one.clear.shape == (3, 1)
        assert np.isfinite(one.value).all()
        assert all(d.shape == (3, 1) for d in one.detail.values())
        none = run(fn, *(a[:, a.shape[1] - ctx :] for a in arrays), **kw)  # T = 0
        assert none.value.shape == (3, 0) and all(d.shape == (3, 0) for d in none.detail.values())
        for width in (ctx, ctx + 7, 0):  # P = 0, with or without context columns
            empty = run(fn, *(np.empty((0, width)) for _ in arrays), **kw)
            assert empty.value.shape[0] == 0 and empty.trigger.dtype == bool
        if ctx:
            with pytest.raises(ValueError, match="columns"):
                fn(*(a[:, : ctx - 1] for a in arrays), **kw)
        # One pair as a 1-D array is the same as a one-row matrix.
        flat = run(fn, *(a[0] for a in arrays), **kw)
        np.testing.assert_array_equal(flat.value, run(fn, *(a[:1] for a in arrays), **kw).value)


@pytest.mark.parametrize(
    ("fn", "kw"),
    [
        (level_signal, {}),
        (level_signal, {"above": 0.5, "below": 0.1}),
        (level_signal, {"above": 0.5, "clear_below": 0.6}),
        (level_signal, {"below": 0.1, "clear_below": 0.0}),
        (jump_signal, {"lookback": 0, "delta": 0.1}),
        (jump_signal, {"lookback": 2, "delta": 0.0}),
        (jump_signal, {"lookback": 2, "delta": 0.1, "clear_delta": 0.2}),
        (jump_signal, {"lookback": 2, "delta": 0.1, "direction": "sideways"}),
        (zscore_signal, {"history": 1, "z": 2.0}),
        (zscore_signal, {"history": 5, "z": 2.0, "clear_z": 0.0}),
    ],
)
def test_bad_arguments_raise(fn: Callable[..., Signal], kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        fn(np.zeros((2, 10)), **kw)


def test_bad_divergence_arguments_raise() -> None:
    z = np.zeros((2, 10))
    with pytest.raises(ValueError):
        divergence_signal(z, z, window=2, horizon=1, z=2.0, min_corr=0.0)
    with pytest.raises(ValueError):
        divergence_signal(z, z, window=5, horizon=0, z=2.0, min_corr=0.0)
    with pytest.raises(ValueError, match="shape"):
        divergence_signal(z, np.zeros((3, 10)), window=5, horizon=1, z=2.0, min_corr=0.0)


# ---- live == batch ------------------------------------------------------------------------


def random_rows(rng: np.random.Generator, p: int, n: int, mode: str, nan_p: float, kind: str) -> np.ndarray:
    """Correlations (kind 'rho') or returns ('ret'): coarse grid (ties, flat runs, exact fits) or smooth."""
    if mode == "grid":
        a = rng.integers(-10, 11, (p, n)) / (10.0 if kind == "rho" else 100.0)
        if n and p:  # a flat run somewhere
            i = int(rng.integers(0, n))
            a[:, i : i + int(rng.integers(1, 30))] = a[:, i : i + 1]
    elif kind == "rho":
        a = np.tanh(np.cumsum(rng.normal(0, 0.1, (p, n)), axis=1) + rng.normal(0, 1, (p, 1)))
    else:
        a = rng.normal(0, 0.02, (p, n))
    a[rng.random((p, n)) < nan_p] = np.nan
    return a


def assert_live_equals_batch(
    batch: Signal, singles: list[Signal], thresholds: list[float], floor: float | None
) -> None:
    p, t = batch.value.shape
    assert len(singles) == t
    if t == 0:
        return
    for name in ("value", *batch.detail):
        got = batch.value if name == "value" else batch.detail[name]
        one = np.concatenate([(s.value if name == "value" else s.detail[name]) for s in singles], axis=1).reshape(p, t)
        assert np.array_equal(np.isnan(got), np.isnan(one)), name
        np.testing.assert_allclose(got, one, rtol=1e-9, atol=1e-12, err_msg=name)
    v = batch.value
    tie = np.zeros((p, t), dtype=bool)
    for thr in thresholds:
        tie |= np.abs(np.abs(v) - abs(thr)) <= 1e-9 * max(1.0, abs(thr))
    if floor is not None:
        tie |= np.abs(batch.detail["rho"] - floor) <= 1e-9
    for name in ("trigger", "clear"):
        got = getattr(batch, name)
        one = np.concatenate([getattr(s, name) for s in singles], axis=1).reshape(p, t)
        np.testing.assert_array_equal(got[~tie], one[~tie], err_msg=name)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    p=st.integers(0, 3),
    t=st.one_of(st.integers(0, 12), st.integers(120, 300)),  # the live path and the block path
    mode=st.sampled_from(["grid", "smooth"]),
    nan_p=st.sampled_from([0.0, 0.01, 0.2]),
    rule=st.sampled_from(["level", "jump", "zscore", "divergence"]),
    k=st.integers(1, 6),
    direction=st.sampled_from(["up", "down", "both"]),
    thr=st.sampled_from([0.1, 0.5, 1.0, 2.0]),
)
def test_batch_equals_each_bar_alone(
    seed: int, p: int, t: int, mode: str, nan_p: float, rule: str, k: int, direction: str, thr: float
) -> None:
    rng = np.random.default_rng(seed)
    floor = None
    if rule == "divergence":
        window, horizon = k + 2, int(rng.integers(1, 5))
        ctx = window + horizon - 1
        arrays = [random_rows(rng, p, t + ctx, mode, nan_p, "ret") for _ in range(2)]
        if mode == "smooth":
            arrays[0] += rng.uniform(-2, 2) * arrays[1]
        floor = float(rng.choice([-1.0, 0.0, 0.5]))
        kw: dict[str, Any] = {"window": window, "horizon": horizon, "z": thr, "min_corr": floor, "direction": direction}
        fn: Callable[..., Signal] = divergence_signal
        levels = [thr, thr / 2]
    else:
        ctx = {"level": 0, "jump": k, "zscore": k + 1}[rule]
        arrays = [random_rows(rng, p, t + ctx, mode, nan_p, "rho")]
        if rule == "level":
            fn, kw, levels = level_signal, {"above": thr / 2}, [thr / 2, thr / 2 - 0.1]
        elif rule == "jump":
            fn, kw, levels = jump_signal, {"lookback": k, "delta": thr, "direction": direction}, [thr, thr / 2]
        else:
            fn, kw, levels = zscore_signal, {"history": k + 1, "z": thr, "direction": direction}, [thr, thr / 2]
    batch = run(fn, *arrays, **kw)
    singles = [run(fn, *(a[:, j : j + ctx + 1] for a in arrays), **kw) for j in range(t)]
    assert batch.value.shape == (p, t)
    assert_live_equals_batch(batch, singles, levels, floor)
