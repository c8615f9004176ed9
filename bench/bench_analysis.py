"""Benchmark of the analysis commands' work, beside /chart's as the baseline from the same run.

Run ``.venv/bin/python bench/bench_analysis.py [rounds]`` (default 5). For each step it prints
the median and max wall time over the rounds: the query (SQLite + monitors) and the PNG render
separately, for /chart (baseline), /heatmap, /history's picture and /leadlag, plus
`corr_readings` with and without the percentile (the extra read of the stored series).
Nothing is asserted.

Data: the demo database (real daily data, 2019–2025), built in a temporary directory.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.charts import render_chart  # noqa: E402
from bot.charts_extra import render_heatmap, render_history  # noqa: E402
from service import analysis, queries  # noqa: E402
from service.demo import build_demo_db  # noqa: E402
from storage.db import open_db  # noqa: E402


def timed(rounds: int, fn: Callable[[], object]) -> tuple[float, float]:
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts), max(ts)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    cfg = build_demo_db(Path(tempfile.mkdtemp(prefix="corrbot-bench-")) / "demo.db")
    db = open_db(cfg.storage.path, readonly=True)
    chart = queries.chart_data(db, cfg, "BTC", "IWM", window=90)
    heat = analysis.heatmap(db, cfg)
    hist = analysis.history_chart(db, cfg, "BTC")
    steps: list[tuple[str, Callable[[], object]]] = [
        ("/chart query (baseline)", lambda: queries.chart_data(db, cfg, "BTC", "IWM", window=90)),
        ("/chart render (baseline)", lambda: render_chart(chart)),
        ("/heatmap query", lambda: analysis.heatmap(db, cfg)),
        ("/heatmap render", lambda: render_heatmap(heat)),
        ("/history picture query", lambda: analysis.history_chart(db, cfg, "BTC")),
        ("/history picture render", lambda: render_history(hist)),
        ("/leadlag query (1y)", lambda: analysis.leadlag(db, cfg, "BTC", "IWM")),
        ("/corr readings without percentile", lambda: [queries._reading(db, cfg, "BTC", "IWM", "1d", w)
                                                       for w in (30, 90)]),
        ("/corr readings with percentile", lambda: queries.corr_readings(db, cfg, "BTC", "IWM")),
    ]
    print(f"{'step':<38} {'median ms':>10} {'max ms':>8}   ({rounds} rounds)")
    for name, fn in steps:
        fn()  # warm-up: imports, caches
        med, mx = timed(rounds, fn)
        print(f"{name:<38} {med:>10.1f} {mx:>8.1f}")


if __name__ == "__main__":
    main()
