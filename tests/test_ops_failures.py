"""Operational failures (issue 8, "Seen today"): each bad database, config or environment gives
one line naming what is wrong and what to do, exit 1 (runtime) or 2 (config), no traceback,
and the stored file is left as it was. Real files in tmp_path, the real CLI."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import DEMO_DATA, REPO

from bot import redact
from service.cli import main
from storage.db import SCHEMA_VERSION, open_db, transaction

BTC_CSV = DEMO_DATA / "BTC-USD_daily.csv"

CONFIG = """
[storage]
path = "{db}"
busy_timeout_seconds = 0.2

[[assets]]
name = "BTC"
kind = "crypto"
exchange = "binance"
symbol = "BTC/USDT"

[[assets]]
name = "IWM"
kind = "equity"
ticker = "IWM"
"""


def config(tmp_path: Path, db: Path, extra: str = "") -> Path:
    p = tmp_path / "corrbot.toml"
    p.write_text(CONFIG.format(db=db) + extra, encoding="utf-8")
    return p


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("corrbot: "), err
    assert "Traceback" not in err
    return err


def digest(*paths: Path) -> dict[str, str | None]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths}


def siblings(db: Path) -> list[Path]:
    """The database and its WAL (the -shm is SQLite's scratch index, rewritten by any reader)."""
    return [db, db.with_name(db.name + "-wal")]


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tiny tmpfs (needs root and mount permission; skipped elsewhere)."""
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def corrbot_db(path: Path) -> None:
    """A migrated corrbot database with some bars, closed."""
    db = open_db(path)
    with transaction(db) as conn:
        conn.execute("INSERT INTO bars (asset, timeframe, ts, close, source) "
                     "VALUES ('BTC', '1d', 86400, 1.0, 'binance')")
    db.conn.close()


# ---- the database --------------------------------------------------------------------------


def test_locked_by_another_writer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "corrbot.db"
    corrbot_db(db)
    toml = config(tmp_path, db)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO bars (asset, timeframe, ts, close) VALUES ('BTC', '1d', 172800, 2.0)")
    try:
        rc, _out, err = run(capsys, "--config", str(toml), "import", "BTC", str(BTC_CSV))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert rc == 1
    one_line(err)
    assert f"database {db} is busy (locked by another process) for more than 0.2s" in err
    rows = sqlite3.connect(db).execute("SELECT ts, close FROM bars").fetchall()  # the one bar it had
    assert rows == [(86400, 1.0)]


def test_disk_full(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with tmpfs(tmp_path / "small", "224k") as d:  # room for the schema (5), not for the import
        db = d / "corrbot.db"
        corrbot_db(db)
        before = sqlite3.connect(db).execute("SELECT * FROM bars").fetchall()
        rc, _out, err = run(capsys, "--config", str(config(tmp_path, db)), "import", "BTC", str(BTC_CSV))
        assert rc == 1
        one_line(err)
        assert f"database {db}: the disk is full (database or disk is full) — free space on {d}" in err
        assert "cannot rollback" not in err
        assert sqlite3.connect(db).execute("SELECT * FROM bars").fetchall() == before
        assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_rollback_error_does_not_hide_the_first(tmp_path: Path) -> None:
    db = open_db(tmp_path / "corrbot.db")
    with pytest.raises(ZeroDivisionError), transaction(db) as conn:
        conn.execute("INSERT INTO bars (asset, timeframe, ts, close) VALUES ('BTC', '1d', 1, 1.0)")
        conn.execute("ROLLBACK")  # what SQLite does by itself on SQLITE_FULL / IOERR
        1 / 0  # noqa: B018
    assert not db.conn.in_transaction


def test_read_only_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_dir = tmp_path / "ro"
    if os.geteuid() == 0:  # root writes through file modes: make the file system read-only
        ctx: contextlib.AbstractContextManager[Path] = tmpfs(db_dir, "4m")
    else:
        db_dir.mkdir()
        ctx = contextlib.nullcontext(db_dir)
    with ctx:
        db = db_dir / "corrbot.db"
        corrbot_db(db)
        before = digest(*siblings(db))
        if os.geteuid() == 0:
            subprocess.run(["mount", "-o", "remount,ro", str(db_dir)], check=True)
        else:
            db.chmod(0o444)
            db_dir.chmod(0o555)
        try:
            rc, _out, err = run(capsys, "--config", str(config(tmp_path, db)), "import", "BTC", str(BTC_CSV))
        finally:
            if os.geteuid() != 0:
                db_dir.chmod(0o755)
        assert rc == 1
        one_line(err)
        assert str(db) in err and ("read-only" in err or "cannot open" in err), err
        assert "readable and writable" in err or "writable by this user" in err
        assert digest(*siblings(db)) == before


def test_empty_file_is_a_new_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "corrbot.db"
    db.write_bytes(b"")
    rc, _out, err = run(capsys, "--config", str(config(tmp_path, db)), "update")
    assert rc == 0, err
    assert sqlite3.connect(db).execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)


def test_not_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "corrbot.db"
    db.write_text("# my notes, not a database\n" * 100, encoding="utf-8")
    before = digest(*siblings(db))
    for argv in (["update"], ["rank", "BTC"]):
        rc, _out, err = run(capsys, "--config", str(config(tmp_path, db)), *argv)
        assert rc == 2
        one_line(err)
        assert f"storage.path: {db} is not an SQLite database (file is not a database)" in err
        assert digest(*siblings(db)) == before


def test_schema_version_not_a_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "corrbot.db"
    corrbot_db(db)
    with sqlite3.connect(db) as c:
        c.execute("UPDATE meta SET value = 'three' WHERE key = 'schema_version'")
    before = digest(*siblings(db))
    for argv in (["update"], ["rank", "BTC"]):
        rc, _out, err = run(capsys, "--config", str(config(tmp_path, db)), *argv)
        assert rc == 1
        one_line(err)
        assert f"database {db} is damaged: meta.schema_version is 'three', not a number" in err
        assert digest(*siblings(db)) == before


def test_dropped_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "corrbot.db"
    corrbot_db(db)
    with sqlite3.connect(db) as c:
        c.execute("DROP VIEW bars_view")
        c.execute("DROP TABLE bars")
    before = digest(*siblings(db))
    for argv in (["update"], ["rank", "BTC"]):
        rc, _out, err = run(capsys, "--config", str(config(tmp_path, db)), *argv)
        assert rc == 1
        one_line(err)
        assert f"database {db} is damaged: table bars is missing" in err
        assert digest(*siblings(db)) == before


def test_another_applications_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "places.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
        c.execute("INSERT INTO moz_places (url) VALUES ('https://example.org')")
    c.close()
    before = digest(*siblings(db))
    for argv in (["update"], ["rank", "BTC"]):
        rc, _out, err = run(capsys, "--config", str(config(tmp_path, db)), *argv)
        assert rc == 2
        one_line(err)
        assert f"storage.path: {db} is another application's SQLite database (tables moz_places" in err
        assert digest(*siblings(db)) == before
    tables = sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("moz_places",)]


def test_parent_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").write_text("a file\n", encoding="utf-8")
    db = tmp_path / "data" / "sub" / "corrbot.db"
    rc, _out, err = run(capsys, "--config", str(config(tmp_path, db)), "update")
    assert rc == 2
    one_line(err)
    assert f"storage.path: {db.parent} cannot be created: {tmp_path / 'data'} is a file, not a directory" in err
    assert (tmp_path / "data").read_text(encoding="utf-8") == "a file\n"


# ---- the config ------------------------------------------------------------------------------


def check_config(capsys: pytest.CaptureFixture[str], toml: Path) -> tuple[int, str, str]:
    return run(capsys, "--config", str(toml), "check-config")


def test_empty_timeframe_windows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = config(tmp_path, tmp_path / "x.db", '\n[correlation]\ntimeframe_windows = { "1h" = [] }\n')
    rc, _out, err = check_config(capsys, toml)
    assert rc == 2
    assert one_line(err) == "corrbot: correlation.timeframe_windows.1h: needs at least one window\n"


def test_deeply_nested_array(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "deep.toml"
    toml.write_text("x = " + "[" * 2000 + "]" * 2000 + "\n", encoding="utf-8")
    rc, _out, err = check_config(capsys, toml)
    assert rc == 2
    assert one_line(err) == f"corrbot: {toml}: not valid TOML (arrays or tables nested too deeply)\n"


def test_utf8_bom_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = config(tmp_path, tmp_path / "x.db")
    toml.write_bytes(b"\xef\xbb\xbf" + toml.read_bytes())
    toml.chmod(0o600)
    rc, out, err = check_config(capsys, toml)
    assert rc == 0, err
    assert err == "" and "BTC" in out


def test_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "corrbot.toml"
    os.mkfifo(fifo)
    # A subprocess: if it blocked on the FIFO, the timeout fails the test instead of hanging it.
    r = subprocess.run([sys.executable, "-m", "service.cli", "--config", str(fifo), "check-config"],
                       capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert r.returncode == 2
    assert one_line(r.stderr) == (
        f"corrbot: cannot read config file {fifo}: not a regular file (a directory, FIFO or device?)\n"
    )


def test_missing_token_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-token"
    toml = config(tmp_path, tmp_path / "x.db", f'\n[telegram]\ntoken_file = "{missing}"\n')
    rc, out, err = check_config(capsys, toml)
    assert rc == 2 and out == ""
    assert one_line(err) == (
        f"corrbot: telegram.token_file: {missing} does not exist "
        "(or unset it and use $CORRBOT_TELEGRAM_TOKEN)\n"
    )


def test_warns_about_files_others_can_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    token.write_text("123456789:AAfake-token-for-the-test-only-xxxxxxxx\n", encoding="utf-8")
    toml = config(tmp_path, tmp_path / "x.db", f'\n[telegram]\ntoken_file = "{token}"\n')
    token.chmod(0o644)
    toml.chmod(0o640)
    rc, out, err = check_config(capsys, toml)
    assert rc == 0 and "BTC" in out
    assert err.splitlines() == [
        f"corrbot: warning: token file {token} is readable by group/others (mode 0644) — run: chmod 600 {token}",
        f"corrbot: warning: config file {toml} is readable by group/others (mode 0640) — run: chmod 600 {toml}",
    ]
    assert "AAfake" not in out + err
    token.chmod(0o600)
    toml.chmod(0o600)
    rc, out, err = check_config(capsys, toml)
    assert rc == 0 and err == ""


# ---- files created private -------------------------------------------------------------------


def test_new_database_and_state_dir_are_private(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state" / "corrbot"
    db_path = state / "corrbot.db"
    old = os.umask(0o022)
    try:
        rc, _out, err = run(capsys, "--config", str(config(tmp_path, db_path)), "update")
        assert rc == 0, err
        db = open_db(db_path)  # open while writing: the -wal and -shm exist
        with transaction(db) as conn:
            conn.execute("INSERT INTO bars (asset, timeframe, ts, close) VALUES ('BTC', '1d', 1, 1.0)")
        modes = {p.name: p.stat().st_mode & 0o777 for p in [tmp_path / "state", state, *state.iterdir()]}
        db.conn.close()
    finally:
        os.umask(old)
    assert modes == {
        "state": 0o700, "corrbot": 0o700,
        "corrbot.db": 0o600, "corrbot.db-wal": 0o600, "corrbot.db-shm": 0o600,
    }


# ---- the command line ------------------------------------------------------------------------


def test_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    toml = config(tmp_path, tmp_path / "x.db")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "--config", str(toml), "check-config"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head -1` having exited before corrbot writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert "warning: config file" in err or err == ""


def test_demo_refuses_a_real_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "corrbot.db"
    corrbot_db(db)  # a bar from a backfill-like source, not the demo's CSVs
    before = digest(*siblings(db))
    rc, out, err = run(capsys, "demo", "--db", str(db))
    assert rc == 2 and out == ""
    assert one_line(err) == (
        f"corrbot: --db {db} already holds data that is not the demo's (BTC (binance)) — the demo writes "
        "into it: give it a file of its own, e.g. --db corrbot-demo.db\n"
    )
    assert digest(*siblings(db)) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrbot.db"]


# ---- the token in any encoding ---------------------------------------------------------------

TOKEN = "123456789:AAfakeTokenForTheOpsTestOnly_abcdefgh"
ECHO = ("Bad Request: invalid request path "
        + urllib.parse.quote(f"/bot{TOKEN}/getMe", safe="").lower())  # %2fbot123456789%3aaafake…%2fgetme


def test_encoded_token_redacted_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    redact.install(TOKEN)
    other = "bot987654321%3A" + "q" * 35  # not installed: caught by its shape
    with caplog.at_level(logging.INFO):
        logging.getLogger("telegram.ext.Updater").warning("getUpdates failed: %s", ECHO)
        logging.getLogger("corrbot.test").error("%s and %s", TOKEN.lower(), other)
    text = caplog.text + " ".join(r.getMessage() for r in caplog.records)
    assert "aafaketokenfortheopstestonly" not in text.lower()
    assert "q" * 35 not in text
    assert f"path %2fbot{redact.REDACTED}%2fgetme" in caplog.records[0].getMessage()


class _EchoingBotApi(BaseHTTPRequestHandler):
    """A Bot API (say, behind a proxy) that answers everything with a 400 echoing the path."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"ok": False, "error_code": 400, "description": ECHO}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


def test_encoded_token_redacted_in_run_error(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingBotApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dead = f"http://127.0.0.1:{server.server_address[1]}/dead"
    extra = f"""
[feeds]
retries = 0
yahoo_base_url = "{dead}"
ccxt_urls = {{ binance = "{dead}" }}

[telegram]
base_url = "http://127.0.0.1:{server.server_address[1]}/bot"
"""
    toml = config(tmp_path, tmp_path / "x.db", extra)
    env = {k: v for k, v in os.environ.items() if k != "CORRBOT_CONFIG"} | {"CORRBOT_TELEGRAM_TOKEN": TOKEN}
    try:
        r = subprocess.run([sys.executable, "-m", "service.cli", "--config", str(toml), "run"],
                           capture_output=True, text=True, timeout=120, cwd=REPO, env=env, check=False)
    finally:
        server.shutdown()
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.splitlines()[-1]
    # python-telegram-bot drops "Bad Request: " and capitalises the rest.
    assert last == (
        f"corrbot: cannot reach the Telegram Bot API at http://127.0.0.1:{server.server_address[1]}: "
        f"Invalid request path %2fbot{redact.REDACTED}%2fgetme"
    ), r.stderr
    assert "aafaketokenfortheopstestonly" not in (r.stdout + r.stderr).lower()


# ---- third-party log noise -------------------------------------------------------------------


async def test_unreachable_yahoo_logs_our_line_not_yfinances(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from core.config import load_config
    from service.sync import poll_equities

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    extra = f'\n[feeds]\nretries = 0\ntimeout_seconds = 5\nyahoo_base_url = "{dead}"\n'
    cfg = load_config(config(tmp_path, tmp_path / "x.db", extra))
    caplog.set_level(logging.DEBUG)
    res = await poll_equities(open_db(cfg.storage.path), cfg, timeframes=("1d",),
                              now=datetime(2025, 7, 12, tzinfo=UTC))
    assert not res[0].ok
    theirs = [r for r in caplog.records if r.name.split(".")[0] == "yfinance"]
    ours = [r for r in caplog.records if r.name == "feeds.equities" and r.levelno == logging.WARNING]
    assert theirs == [], [r.getMessage() for r in theirs][:5]
    assert [r.getMessage() for r in ours] == ["yahoo: IWM: Yahoo unreachable or failing (IWM 1d)"]
    assert "delisted" not in caplog.text
