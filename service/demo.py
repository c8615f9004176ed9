"""`corrbot demo`: the real bundled daily data -> SQLite -> correlations, fully offline.

The embedded config watches BTC, ETH, SOL, ADA and an ALTS basket against IWM, PSCT, IWO,
XSW, QQQ, SPY, XLK and a small-cap-tech basket (PSCT + XSW), daily, windows 30 and 90.
Data: service/demo_data/ (see its README for provenance).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import sqlite_utils

from core.config import Config, parse_config
from service.pipeline import UpdateReport, update_correlations
from service.sync import ImportReport, import_csv
from storage.db import open_db

DATA = Path(__file__).with_name("demo_data")

DEMO_TOML = """
[correlation]
timeframes = ["1d"]
windows = [30, 90]
default_crypto = "BTC"
default_benchmark = "SMALLCAP_TECH"
default_window = 90

[[baskets]]
name = "ALTS"
members = { ETH = 0.5, SOL = 0.25, ADA = 0.25 }

[[baskets]]
name = "SMALLCAP_TECH"
members = { PSCT = 0.5, XSW = 0.5 }
"""

CRYPTO = ["BTC", "ETH", "SOL", "ADA"]
EQUITY = ["IWM", "PSCT", "IWO", "XSW", "QQQ", "SPY", "XLK"]


def demo_config(db_path: Path) -> Config:
    data: dict[str, object] = tomllib.loads(DEMO_TOML)
    data["storage"] = {"path": str(db_path)}
    data["assets"] = [{"name": c, "kind": "crypto", "exchange": "binance", "symbol": f"{c}/USDT"} for c in CRYPTO] + [
        {"name": e, "kind": "equity", "ticker": e} for e in EQUITY
    ]
    return parse_config(data)


def demo_files() -> dict[str, Path]:
    return {c: DATA / f"{c}-USD_daily.csv" for c in CRYPTO} | {e: DATA / f"{e}_daily.csv" for e in EQUITY}


def build_demo_db(path: Path) -> Config:
    """Import the bundled data into the DB at `path` and compute every correlation."""
    cfg = demo_config(path)
    db = open_db(path)
    try:
        import_all(db, cfg)
        update_correlations(db, cfg)
    finally:
        db.close()
    return cfg


def import_all(db: sqlite_utils.Database, cfg: Config) -> list[ImportReport]:
    return [import_csv(db, cfg, name, file) for name, file in demo_files().items()]


def run_demo(db: sqlite_utils.Database, cfg: Config) -> tuple[list[ImportReport], UpdateReport]:
    reports = import_all(db, cfg)
    return reports, update_correlations(db, cfg)
