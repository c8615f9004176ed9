"""The `corrbot` command line: a thin shell over service/ (argparse, printing, exit codes).

Exit status: 0 ok, 1 runtime failure (feed down, storage), 2 bad config, bad arguments or a
bad input file (an import refused by the integrity guards included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bot.redact import redact
from core import __version__
from core.config import Config, config_path, load_config
from core.errors import ConfigError, CorrbotError, ImportFileError, UserInputError
from core.models import iso
from service import analysis_cli, queries
from service.logsetup import configure as configure_logging
from service.signals import early_stop
from service.textfmt import backtest_table, history_table, rank_table, reading_lines, watch_list
from storage.db import explain

log = logging.getLogger("corrbot")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corrbot", description="Crypto vs small-cap tech correlations.")
    p.add_argument("--config", help="TOML config (default: $CORRBOT_CONFIG or ./corrbot.toml)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    p.add_argument("--version", action="version", version=f"corrbot {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("check-config", help="validate the config and print the watch list")
    imp = sub.add_parser("import", help="load a CSV of historical bars for a configured asset")
    imp.add_argument("asset")
    imp.add_argument("file")
    imp.add_argument("--drop-last", action="store_true", help="drop the last row (captured intraday)")
    imp.add_argument("--timeframe", choices=["1d", "1h", "30m"], help="the bar size the file holds (checked)")
    imp.add_argument("--replace", action="store_true",
                     help="overwrite stored closes the file changes (refused without it)")
    bf = sub.add_parser("backfill", help="fetch history for the watch list")
    bf.add_argument("--since", type=_date, help="YYYY-MM-DD (default: feeds.backfill_days ago)")
    bf.add_argument("--asset", nargs="+", default=None, metavar="NAME")
    sub.add_parser("update", help="bring stored correlations up to date with stored bars")
    for name, helptext in (("corr", "latest correlation of A with B"), ("rank", "counterparts of A ranked")):
        c = sub.add_parser(name, help=helptext)
        c.add_argument("a", nargs="?" if name == "rank" else None)
        if name == "corr":
            c.add_argument("b")
        c.add_argument("--window", type=int)
        c.add_argument("--timeframe", default="1d")
        c.add_argument("--json", action="store_true")
    h = sub.add_parser("history", help="correlation of A with each counterpart per calendar year")
    h.add_argument("a", nargs="?")
    h.add_argument("--by", default="year", choices=["year"])
    h.add_argument("--json", action="store_true")
    bt = sub.add_parser("backtest", help="replay stored history through the alert rules")
    bt.add_argument("--start", type=_date, help="YYYY-MM-DD (default: all stored history)")
    bt.add_argument("--end", type=_date, help="YYYY-MM-DD (inclusive)")
    bt.add_argument("--rule", help="one rule by name")
    bt.add_argument("--json", action="store_true")
    analysis_cli.add_parsers(sub)
    d = sub.add_parser("demo", help="import the bundled real data and print rank and history tables")
    d.add_argument("--db", default="corrbot-demo.db", help="where to write the demo database")
    sub.add_parser("run", help="run the bot and the scheduler (until SIGTERM)")
    b = sub.add_parser("backup", help="copy the database to PATH (safe while `run` is running)")
    b.add_argument("path", metavar="PATH")
    b.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    return p


def _date(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2024-01-31") from None


def _open(cfg: Config, readonly: bool = True):  # type: ignore[no-untyped-def]
    from storage.db import open_db

    return open_db(cfg.storage.path, readonly=readonly, busy_timeout=cfg.storage.busy_timeout_seconds)


def cmd_check_config(cfg: Config, args: argparse.Namespace) -> int:
    from core.config import config_path, readable_by_others

    tf = cfg.telegram.token_file
    if tf is not None:
        if not tf.is_file():
            why = "does not exist" if not tf.exists() else "is not a regular file"
            raise ConfigError(f"{tf} {why} (or unset it and use $CORRBOT_TELEGRAM_TOKEN)", "telegram.token_file")
        cfg.telegram_token()  # unreadable, not UTF-8: ConfigError naming the key
    print(watch_list(cfg))
    for what, path in (("token file", tf), ("config file", config_path(args.config))):
        warning = readable_by_others(path) if path is not None else None
        if warning:
            print(f"corrbot: warning: {what} {warning}", file=sys.stderr)
    return 0


def cmd_import(cfg: Config, args: argparse.Namespace) -> int:
    from service.pipeline import update_correlations
    from service.sync import import_csv

    db = _open(cfg, readonly=False)
    rep = import_csv(db, cfg, args.asset, args.file, drop_last=args.drop_last, timeframe=args.timeframe,
                     replace=args.replace)
    for line, what in rep.warnings:
        print(f"corrbot: warning: {args.file}:{line}: {what}", file=sys.stderr)
    print(
        f"{rep.asset} {rep.timeframe} ({rep.layout}): {rep.rows_read} rows read, {rep.inserted} new, "
        f"{rep.updated} updated, {rep.unchanged} unchanged, {len(rep.skipped)} skipped"
    )
    for line, reason in rep.skipped[:10]:
        print(f"  skipped line {line}: {reason}")
    for note in rep.notes:
        print(f"  {note}")
    print(update_correlations(db, cfg).summary())
    return 0


def cmd_backfill(cfg: Config, args: argparse.Namespace) -> int:
    from service.backfill import backfill

    db = _open(cfg, readonly=False)
    results = asyncio.run(backfill(db, cfg, since=args.since, assets=args.asset))
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"error: {r.error}", file=sys.stderr)
    return 1 if failed and len(failed) == len(results) else 0


def cmd_update(cfg: Config, args: argparse.Namespace) -> int:
    from service.pipeline import update_correlations

    print(update_correlations(_open(cfg, readonly=False), cfg).summary())
    return 0


def cmd_corr(cfg: Config, args: argparse.Namespace) -> int:
    db = _open(cfg)
    if args.json:
        # One object: the asked window, else the default one.
        window = args.window if args.window is not None else cfg.default_window(args.timeframe)
        r = queries.corr_readings(db, cfg, args.a, args.b, window=window, timeframe=args.timeframe)[0]
        print(json.dumps(r.as_json()))
    else:
        readings = queries.corr_readings(db, cfg, args.a, args.b, window=args.window, timeframe=args.timeframe)
        print("\n".join(line for r in readings for line in reading_lines(r)))
    return 0


def cmd_rank(cfg: Config, args: argparse.Namespace) -> int:
    rk = queries.rank(_open(cfg), cfg, args.a, window=args.window, timeframe=args.timeframe)
    if args.json:
        print(
            json.dumps(
                {
                    "a": rk.a,
                    "window": rk.window,
                    "timeframe": rk.timeframe,
                    "asof": iso(rk.asof, rk.timeframe),
                    "ranking": [{"b": r.b, "value": r.value, "n": r.n} for r in rk.rows],
                }
            )
        )
    else:
        print(rank_table(rk))
    return 0


def cmd_history(cfg: Config, args: argparse.Namespace) -> int:
    hist = queries.history(_open(cfg), cfg, args.a, by=args.by)
    if args.json:
        print(json.dumps({"a": hist.a, "by": hist.by, "rows": [vars(r) for r in hist.rows]}))
    else:
        print(history_table(hist))
    return 0


def cmd_heatmap(cfg: Config, args: argparse.Namespace) -> int:
    return analysis_cli.cmd_heatmap(_open(cfg), cfg, args)


def cmd_leadlag(cfg: Config, args: argparse.Namespace) -> int:
    return analysis_cli.cmd_leadlag(_open(cfg), cfg, args)


def cmd_backtest(cfg: Config, args: argparse.Namespace) -> int:
    from service.backtest import backtest, counts_per_year

    start = int(args.start.timestamp()) if args.start else None
    end = int(args.end.timestamp()) + 86399 if args.end else None
    episodes = backtest(_open(cfg), cfg, start=start, end=end, rule=args.rule)
    if args.json:
        print(json.dumps({"alerts": [e.as_json() for e in episodes]}))
        return 0
    print(backtest_table(episodes, counts_per_year(episodes)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from service.demo import demo_config, foreign_bars, run_demo
    from storage.db import open_db

    cfg = demo_config(Path(args.db).resolve())
    path = cfg.storage.path
    if path.is_file() and path.stat().st_size > 0:  # a previous demo's DB is fine; a real one is not
        existing = open_db(path, readonly=True, key="--db")
        try:
            foreign = foreign_bars(existing)
        finally:
            existing.close()
        if foreign:
            more = f", … ({len(foreign)} series)" if len(foreign) > 3 else ""
            raise UserInputError(
                f"--db {path} already holds data that is not the demo's ({', '.join(foreign[:3])}{more}) "
                "— the demo writes into it: give it a file of its own, e.g. --db corrbot-demo.db"
            )
    db = open_db(path, key="--db")
    imports, update = run_demo(db, cfg)
    for rep in imports:
        print(f"imported {rep.asset:<4} {rep.timeframe}: {rep.rows_read} rows ({rep.inserted} new)")
    print(update.summary(), end="\n\n")
    for a in ("BTC", "ETH", "ALTS"):
        print(rank_table(queries.rank(db, cfg, a)), end="\n\n")
    print(history_table(queries.history(db, cfg, "BTC")), end="\n\n")
    print("\n".join(reading_lines(queries.corr_readings(db, cfg)[-1])))
    _demo_alerts(db, cfg, Path(args.db).resolve())
    print(f"\ndatabase: {cfg.storage.path}  (browse it: datasette {args.db})")
    return 0


def _demo_alerts(db: object, cfg: Config, db_path: Path) -> None:
    """Replay the example config's alert rules over the bundled data; print every push."""
    from bot.format import strip_html
    from service.backtest import counts_per_year
    from service.demo import EXAMPLE_CONFIG, notable_chart, replay_alerts, with_example_rules

    if not EXAMPLE_CONFIG.is_file():  # installed from a wheel: the example config stays in the checkout
        print(f"\n(alert replay skipped: {EXAMPLE_CONFIG} is not there — run `make demo` from a checkout)")
        return
    rcfg = with_example_rules(cfg)
    replay = replay_alerts(db, rcfg)  # type: ignore[arg-type]
    print(f"\n=== The alerts config.example.toml's rules would have pushed, 2019–2025 "
          f"({len(replay.pushes)} messages) ===\n")
    for text in replay.pushes:
        print(strip_html(text), end="\n\n")
    print(backtest_table([], counts_per_year(replay.episodes)).split("\n", 1)[0] if not replay.episodes
          else backtest_table(replay.episodes, counts_per_year(replay.episodes)).split("\n\n")[-1])
    if replay.notable is not None:
        ep = replay.notable
        png = db_path.with_name(db_path.stem + "-alert.png")
        png.write_bytes(notable_chart(db, rcfg, ep))  # type: ignore[arg-type]
        when = iso(ep.fired_ts, ep.timeframe)
        print(f"\nchart of the most notable episode ({ep.rule}, {ep.a}/{ep.b}, {when}, value {ep.value:+.2f}): {png}")


def cmd_run(cfg: Config, args: argparse.Namespace) -> int:
    from service.runner import main_run

    main_run(cfg, args.stop, config_path(args.config).resolve())  # SIGHUP re-reads this file
    # The loop restored the default handlers on close: a late signal must not turn 0 into -15.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    return 0


def cmd_backup(cfg: Config, args: argparse.Namespace) -> int:
    from service.backup import backup

    print(backup(Path(cfg.storage.path), Path(args.path), force=args.force).summary())
    return 0


COMMANDS = {
    "check-config": cmd_check_config,
    "import": cmd_import,
    "backfill": cmd_backfill,
    "update": cmd_update,
    "corr": cmd_corr,
    "rank": cmd_rank,
    "history": cmd_history,
    "backtest": cmd_backtest,
    "heatmap": cmd_heatmap,
    "leadlag": cmd_leadlag,
    "run": cmd_run,
    "backup": cmd_backup,
}


def main(argv: Sequence[str] | None = None, *, stop: asyncio.Event | None = None) -> int:
    """``stop``: the event `service.entry` already wired to SIGTERM/SIGINT before importing us."""
    args = _parser().parse_args(argv)
    configure_logging(verbose=args.verbose, service=args.command == "run")
    db_path: str | Path = args.db if args.command == "demo" else "(storage.path)"
    busy: float | None = None
    args.stop = (stop or early_stop()) if args.command == "run" else None
    try:
        if args.command == "demo":
            rc = cmd_demo(args)
            sys.stdout.flush()
            return rc
        cfg = load_config(args.config)
        db_path, busy = cfg.storage.path, cfg.storage.busy_timeout_seconds
        rc = COMMANDS[args.command](cfg, args)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return rc
    except BrokenPipeError:
        # `corrbot rank BTC | head -1`: the reader is gone. Exit quietly, as a tool killed by
        # SIGPIPE would (status 141); stdout goes to /dev/null so the final flush is silent.
        with contextlib.suppress(OSError, ValueError):  # ValueError: no real fd (in-process tests)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 141
    except sqlite3.Error as exc:  # a failure after open_db: locked, disk full, damaged …
        err = explain(exc, db_path, busy_timeout=busy)
        print(f"corrbot: {redact(str(err))}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    except (ConfigError, UserInputError, ImportFileError) as exc:  # bad input: exit 2
        print(f"corrbot: {redact(str(exc))}", file=sys.stderr)
        return 2
    except CorrbotError as exc:  # messages are built token-free; redact anyway (echoed URLs)
        print(f"corrbot: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
