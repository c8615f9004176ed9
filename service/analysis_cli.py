"""`corrbot heatmap` and `corrbot leadlag`: their arguments and printing (cli.py stays thin).

Text goes to stdout as plain text (the chat replies without their HTML); ``--json`` prints one
object; ``heatmap --out PNG`` also writes the /heatmap picture.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import sqlite_utils

from bot.analysis_replies import heatmap_table, leadlag_reply
from bot.format import strip_html
from core.config import Config
from core.errors import UserInputError
from core.models import iso
from service import analysis

PERIODS = {"90d": 90, "6m": 180, "1y": 365, "2y": 730, "3y": 1095, "5y": 1825, "all": None}


def add_parsers(sub: Any) -> None:
    hm = sub.add_parser("heatmap", help="every crypto × equity correlation as one matrix")
    hm.add_argument("--window", type=int)
    hm.add_argument("--timeframe", default="1d")
    hm.add_argument("--out", metavar="PNG", help="also write the /heatmap picture to this file")
    hm.add_argument("--json", action="store_true")
    ll = sub.add_parser("leadlag", help="correlation of A with B at lags −5 … +5, plain and Dimson beta")
    ll.add_argument("a")
    ll.add_argument("b")
    ll.add_argument("--period", default="1y", choices=list(PERIODS), help="returns ending at the latest (default 1y)")
    ll.add_argument("--lags", type=int, default=analysis.MAX_LAG, help="largest lag, in bars (default 5)")
    ll.add_argument("--json", action="store_true")


def cmd_heatmap(db: sqlite_utils.Database, cfg: Config, args: argparse.Namespace) -> int:
    h = analysis.heatmap(db, cfg, window=args.window, timeframe=args.timeframe)
    if args.out:
        from bot.charts_extra import render_heatmap  # matplotlib only when a picture is asked for

        out = Path(args.out)
        if out.is_dir():
            raise UserInputError(f"--out {out} is a directory; give a file name like heatmap.png")
        try:
            out.write_bytes(render_heatmap(h))
        except OSError as exc:
            raise UserInputError(f"--out {out}: cannot write ({exc.strerror})") from None
    if args.json:
        print(json.dumps({
            "timeframe": h.timeframe, "window": h.window, "asof": iso(h.asof, h.timeframe), "rows": h.rows,
            "cols": h.cols, "caps": h.caps,
            "cells": [{"a": c.a, "b": c.b, "value": c.value, "n": c.n} for c in h.cells],
        }))
    else:
        print(strip_html(heatmap_table(h)))
        if args.out:
            print(f"picture: {args.out}")
    return 0


def cmd_leadlag(db: sqlite_utils.Database, cfg: Config, args: argparse.Namespace) -> int:
    lags = analysis.check_lag(args.lags)
    ll = analysis.leadlag(db, cfg, args.a, args.b, period_days=PERIODS[args.period], period_label=args.period,
                          max_lag=lags)
    print(json.dumps(ll.as_json()) if args.json else strip_html(leadlag_reply(ll)))
    return 0
