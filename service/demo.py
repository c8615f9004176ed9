"""`corrbot demo`: the real bundled daily data -> SQLite -> correlations, fully offline.

The embedded config watches BTC, ETH, SOL, ADA and an ALTS basket against IWM, PSCT, IWO,
XSW, QQQ, SPY, XLK and a small-cap-tech basket (PSCT + XSW), daily, windows 30 and 90.
Data: service/demo_data/ (see its README for provenance).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import sqlite_utils

from bot import alert_text
from bot.charts import render_chart
from core.config import Config, parse_config
from core.errors import CorrbotError
from core.models import AlertEvent
from service.backtest import Episode, backtest
from service.pipeline import UpdateReport, update_correlations
from service.queries import chart_data
from service.sync import ImportReport, import_csv
from storage.db import open_db

DATA = Path(__file__).with_name("demo_data")
# The demo replays the rules a new installation starts with: those of config.example.toml.
EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "config.example.toml"

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
LARGE_CAP = {"QQQ", "SPY", "XLK"}


def demo_config(db_path: Path) -> Config:
    data: dict[str, object] = tomllib.loads(DEMO_TOML)
    data["storage"] = {"path": str(db_path)}
    data["assets"] = [{"name": c, "kind": "crypto", "exchange": "binance", "symbol": f"{c}/USDT"} for c in CRYPTO] + [
        {"name": e, "kind": "equity", "ticker": e, "cap": "large" if e in LARGE_CAP else "small"} for e in EQUITY
    ]
    return parse_config(data)


def demo_files() -> dict[str, Path]:
    return {c: DATA / f"{c}-USD_daily.csv" for c in CRYPTO} | {e: DATA / f"{e}_daily.csv" for e in EQUITY}


def foreign_bars(db: sqlite_utils.Database) -> list[str]:
    """What in ``db`` the demo did not put there: "ASSET (source)" for each such bar series.

    The demo imports each bundled file under source ``csv:<file name>``; anything else
    (a backfill, another import) means the file is someone's real database.
    """
    if "bars" not in db.table_names():
        return []
    ours = {(name, f"csv:{path.name}") for name, path in demo_files().items()}
    rows = db.execute("SELECT DISTINCT asset, source FROM bars ORDER BY asset, source").fetchall()
    return [f"{a} ({src or 'no source'})" for a, src in rows if (a, src) not in ours]


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


def with_example_rules(cfg: Config, example: Path = EXAMPLE_CONFIG) -> Config:
    """``cfg`` plus the [[rules]] of config.example.toml (rules on pairs the demo lacks dropped)."""
    try:
        rules = tomllib.loads(example.read_text(encoding="utf-8")).get("rules", [])
    except OSError as exc:
        raise CorrbotError(f"cannot read {example} for the demo's alert rules ({exc.strerror})") from None
    data = cfg.model_dump(mode="json")
    data["rules"] = rules
    return parse_config(data)


@dataclass(frozen=True)
class Replay:
    pushes: list[str]  # Telegram HTML, in the order they would have been sent
    episodes: list[Episode]
    notable: Episode | None


def replay_alerts(db: sqlite_utils.Database, cfg: Config) -> Replay:
    """What the rules would have pushed over the bundled history: fires grouped per rule and
    bar, each resolve on its own (it replies to its fire), as the live service sends them."""
    episodes = backtest(db, cfg)
    rules = {r.name: r for r in cfg.rules}
    fires: dict[tuple[int, str], list[AlertEvent]] = {}
    resolves: list[tuple[int, str, AlertEvent]] = []
    for e in episodes:
        rule = rules[e.rule]
        fire = AlertEvent("fire", rule, f"{e.a}/{e.b}", e.a, e.b, e.window, None, e.fired_ts, None, e.value,
                          e.value, e.detail, e.detail)
        fires.setdefault((e.fired_ts, e.rule), []).append(fire)
        if e.resolved_ts is not None:
            resolves.append((e.resolved_ts, e.rule, replace(fire, kind="resolve", resolved_ts=e.resolved_ts,
                                                            value=e.resolve_value, detail=e.resolve_detail)))
    timeline = [(ts, 0, rule, alert_text.fire_text(evs)) for (ts, rule), evs in fires.items()]
    timeline += [(ts, 1, rule, alert_text.resolve_text(ev)) for ts, rule, ev in resolves]
    timeline.sort(key=lambda t: (t[0], t[1], t[2]))
    scored = [e for e in episodes if e.kind == "divergence"] or episodes
    notable = max(scored, key=lambda e: abs(e.value), default=None)
    return Replay([t[3] for t in timeline], episodes, notable)


def notable_chart(db: sqlite_utils.Database, cfg: Config, ep: Episode) -> bytes:
    """The /chart picture around an episode: 6 months to 2 months after, the episode shaded."""
    end = (ep.resolved_ts or ep.fired_ts) + 60 * 86400
    data = chart_data(db, cfg, ep.a, ep.b, window=ep.window, timeframe=ep.timeframe, period_days=240,
                      until=end, spans=((ep.rule, ep.fired_ts, ep.resolved_ts),))
    return render_chart(data)
