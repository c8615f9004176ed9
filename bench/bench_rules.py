# ruff: noqa: E501
"""Benchmark of the alert-rule signals (monitors/rules.py): one NEW bar (T = 1) for 10,000 pairs,
side by side with a plain per-pair Python loop computing the same four rules in the same run.

Run ``.venv/bin/python bench/bench_rules.py``. Figures only: nothing is asserted about time.

Data: REAL daily data tiled, not random numbers. The bundled demo data (service/demo_data) is
built into a temporary DB exactly as `corrbot demo` does; its 40 pairs give aligned log returns
and the stored w30 correlation series. Pair p of the 10,000 (the universe size of
bench/bench_engine.py) is real pair p mod 40, cut at its own random end date, so every row is a
real stretch of history (no NaN warm-up inside) and rows differ.

Rules, as a live update would call them (the last column is the new bar, preceded by exactly
the context the rule needs): level (w30 ρ ≥ 0.5), jump (w30 ρ change over 5 bars ≥ 0.2),
zscore (w30 ρ against its previous 252 values, |z| ≥ 2), divergence (β/ρ/s over 60 returns,
horizon 3, |z| ≥ 2, ρ ≥ 0.2). Each of NEW_BARS consecutive bars is timed once (after one
warm-up bar); the loop baseline runs the same rules pair by pair (numpy on one pair's row, the
way service.queries.divergence computes /diverge) on LOOP_SAMPLE pairs and is scaled linearly.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from anywhere

from monitors.align import pair_returns  # noqa: E402
from monitors.lifecycle import LifeState, advance  # noqa: E402
from monitors.rules import Signal, divergence_signal, jump_signal, level_signal, zscore_signal  # noqa: E402
from service.demo import build_demo_db  # noqa: E402
from service.pipeline import build_panel  # noqa: E402
from storage import corr as corr_store  # noqa: E402
from storage.db import open_db  # noqa: E402

N_PAIRS = 10_000
NEW_BARS = 50  # timed new bars (consecutive), after one warm-up bar
LOOP_SAMPLE = 500  # pairs timed for the per-pair loop, scaled ×(N_PAIRS / LOOP_SAMPLE)
LOOP_BARS = 5  # bars timed for the loop
LOOKBACK, HISTORY, WINDOW, HORIZON = 5, 252, 60, 3
SPAN = HISTORY + 1 + NEW_BARS + 1  # columns kept per pair: the longest context + every new bar

RULES: dict[str, tuple[int, Callable[..., Signal], dict[str, object]]] = {
    # name: (context columns, function, parameters)
    "level w30 ≥ 0.5": (0, level_signal, {"above": 0.5}),
    "jump lookback 5": (LOOKBACK, jump_signal, {"lookback": LOOKBACK, "delta": 0.2}),
    "zscore history 252": (HISTORY, zscore_signal, {"history": HISTORY, "z": 2.0}),
    "divergence w60 h3": (
        WINDOW + HORIZON - 1,
        divergence_signal,
        {"window": WINDOW, "horizon": HORIZON, "z": 2.0, "min_corr": 0.2},
    ),
}


def real_universe(tmp: Path, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(rho, c, e), each (N_PAIRS, SPAN), tiled from the 40 real demo pairs; and the real pair count."""
    path = tmp / "demo.db"
    cfg = build_demo_db(path)
    db = open_db(path)
    panel = build_panel(db, cfg, "1d")
    series = []
    for a, b in cfg.pair_list:
        r = pair_returns(panel[a].dropna(), panel[b].dropna(), "1d")
        sid = corr_store.find_series(db, a, b, "1d", 30)
        assert sid is not None
        rho = corr_store.read_series(db, sid)["value"].reindex(r.index)
        first = int(np.argmax(rho.notna().to_numpy()))
        series.append((rho.to_numpy()[first:], r["x"].to_numpy()[first:], r["y"].to_numpy()[first:]))
    db.close()
    out = np.empty((3, N_PAIRS, SPAN))
    for p in range(N_PAIRS):
        arrs = series[p % len(series)]
        end = int(rng.integers(SPAN, len(arrs[0]) + 1))
        for k in range(3):
            out[k, p] = arrs[k][end - SPAN : end]
    assert np.isfinite(out).all()
    return out[0], out[1], out[2], len(series)


def inputs(name: str, rho: np.ndarray, c: np.ndarray, e: np.ndarray, bar: int) -> tuple[np.ndarray, ...]:
    """The views a live update passes for the new bar at column `bar`: its context + itself."""
    ctx = RULES[name][0]
    cols = slice(bar - ctx, bar + 1)
    return (c[:, cols], e[:, cols]) if name.startswith("divergence") else (rho[:, cols],)


# ---- the per-pair loop baseline -----------------------------------------------------------


def loop_rule(name: str, args: tuple[np.ndarray, ...]) -> list[tuple[float, bool, bool]]:
    """The same rule pair by pair: Python scalars, or numpy on one pair's row."""
    out = []
    if name.startswith("level"):
        for row in args[0]:
            v = float(row[-1])
            out.append((v, v >= 0.5, v < 0.4))
    elif name.startswith("jump"):
        for row in args[0]:
            v = float(row[-1]) - float(row[0])
            out.append((v, abs(v) >= 0.2, abs(v) < 0.1))
    elif name.startswith("zscore"):
        for row in args[0]:
            f = np.arctanh(np.clip(row, -0.999999, 0.999999))
            sd = float(np.std(f[:-1], ddof=1))
            v = (float(f[-1]) - float(f[:-1].mean())) / sd if sd > 0 else math.nan
            out.append((v, abs(v) >= 2.0, abs(v) < 1.0))
    else:
        for x, y in zip(args[0], args[1], strict=True):
            xe, ye = x[:WINDOW], y[:WINDOW]  # estimation block, then the HORIZON recent returns
            dx, dy = xe - xe.mean(), ye - ye.mean()
            beta = float(dx @ dy / (dy @ dy))
            rho = float(dx @ dy / math.sqrt((dx @ dx) * (dy @ dy)))
            s = float(np.std(xe - beta * ye, ddof=1))
            resid = float(x[WINDOW:].sum()) - beta * float(y[WINDOW:].sum())
            v = resid / (s * math.sqrt(HORIZON))
            out.append((v, rho >= 0.2 and abs(v) >= 2.0, abs(v) < 1.0))
    return out


# ---- main ---------------------------------------------------------------------------------


def main() -> None:
    t_start = time.perf_counter()
    rng = np.random.default_rng(20240607)
    print(
        f"corrbot rule-signal benchmark — {N_PAIRS} pairs, one new bar (T = 1), "
        f"numpy {np.__version__}, pandas {pd.__version__}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} (other processes on the machine slow every figure)"
    )
    with tempfile.TemporaryDirectory(prefix="corrbot-bench-rules-") as tmpdir:
        rho, c, e, n_real = real_universe(Path(tmpdir), rng)
    print(
        f"data: REAL daily demo data tiled — {n_real} real pairs (w30 ρ as stored, aligned log returns), "
        f"pair p = real pair p mod {n_real} cut at a random end date; {SPAN} columns per pair"
    )
    first = SPAN - NEW_BARS - 1  # column of the warm-up bar; the timed bars follow it
    vec: dict[str, list[float]] = {name: [] for name in RULES}
    life: list[float] = []  # the lifecycle step of all four rules (monitors.lifecycle.advance)
    total: list[float] = []
    states = {name: LifeState.fresh(N_PAIRS) for name in RULES}
    for k in range(NEW_BARS + 1):
        bar = first + k
        spent = stepped = 0.0
        for name, (_, fn, kw) in RULES.items():
            args = inputs(name, rho, c, e, bar)
            t0 = time.perf_counter()
            sig = fn(*args, **kw)
            dt = time.perf_counter() - t0
            assert sig.value.shape == (N_PAIRS, 1)
            t1 = time.perf_counter()
            advance(states[name], np.array([bar]), sig.value, sig.trigger, sig.clear)
            stepped += time.perf_counter() - t1
            if k:
                vec[name].append(dt)
            spent += dt
        if k:
            total.append(spent + stepped)
            life.append(stepped)

    pick = np.sort(rng.choice(N_PAIRS, LOOP_SAMPLE, replace=False))
    scale = N_PAIRS / LOOP_SAMPLE
    loop: dict[str, list[float]] = {name: [] for name in RULES}
    worst = dict.fromkeys(RULES, 0.0)
    for k in range(LOOP_BARS):
        bar = SPAN - 1 - k
        for name, (_, fn, kw) in RULES.items():
            args = tuple(a[pick] for a in inputs(name, rho, c, e, bar))
            t0 = time.perf_counter()
            res = loop_rule(name, args)
            loop[name].append((time.perf_counter() - t0) * scale)
            # Sanity: the loop and the vectorised rule agree on these pairs.
            sig = fn(*args, **kw)
            v = np.array([r[0] for r in res])
            worst[name] = max(worst[name], float(np.nanmax(np.abs(v - sig.value[:, 0]))))
            assert [r[1] for r in res] == list(sig.trigger[:, 0]) and [r[2] for r in res] == list(sig.clear[:, 0])

    def q(xs: list[float]) -> str:
        return f"{np.median(xs) * 1e3:8.2f} / {np.percentile(xs, 90) * 1e3:8.2f}"

    loop_total = [sum(loop[name][i] for name in RULES) for i in range(LOOP_BARS)]
    print(
        f"\nvectorised: {NEW_BARS} consecutive new bars, each call timed; loop: {LOOP_SAMPLE} sampled pairs × "
        f"{LOOP_BARS} bars, scaled ×{scale:.0f} to {N_PAIRS} pairs (the full loop would take "
        f"~{np.median(loop_total):.1f} s per bar)\n"
    )
    print(f"{'rule':<22} {'vectorised ms':>21} {'loop ms (×' + f'{scale:.0f})':>21} {'speed-up':>9}  max |vec − loop|")
    print(f"{'':<22} {'median / p90':>21} {'median / p90':>21} {'(median)':>9}")
    for name in RULES:
        sp = np.median(loop[name]) / np.median(vec[name])
        print(f"{name:<22} {q(vec[name]):>21} {q(loop[name]):>21} {sp:8.0f}×  {worst[name]:.1e}")
    print(f"{'lifecycle, all four':<22} {q(life):>21} {'(not in the loop)':>21}")
    sp = np.median(loop_total) / np.median(total)
    verdict = "met" if np.median(total) <= 0.020 else "MISSED"
    print(f"{'all four + lifecycle':<22} {q(total):>21} {q(loop_total):>21} {sp:8.0f}×")
    print(f"\ntarget: all four rules with their lifecycle step ≤ 20 ms median per new bar for {N_PAIRS} pairs"
          f" — {verdict}")
    print(
        f"total run time {time.perf_counter() - t_start:.0f} s; reproduce: cd {REPO} && .venv/bin/python bench/bench_rules.py"
    )


if __name__ == "__main__":
    main()
