"""`corrbot` end to end, in-process: real SQLite files built from the bundled real data,
every printed number checked against the independent pandas reference (tests/reference.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_DATA, REPO, TEST_DATA
from reference import basket, daily_close, expected

from core.config import Config
from service.cli import main
from service.demo import DEMO_TOML, build_demo_db, demo_files

TOL = 1e-9
ASOF = "2025-08-22"
COUNTERPARTS = {"IWM", "PSCT", "IWO", "XSW", "QQQ", "SPY", "XLK", "SMALLCAP_TECH"}


def config_toml(cfg: Config, db: Path) -> str:
    """The demo config as a TOML file: [storage] + [[assets]] from the Config, then DEMO_TOML."""
    out = [f"[storage]\npath = {json.dumps(str(db))}\n"]
    for a in cfg.assets:
        fields = {"name": a.name, "kind": a.kind}
        fields |= {"exchange": a.exchange, "symbol": a.symbol} if a.kind == "crypto" else {"ticker": a.ticker}
        if a.cap:
            fields["cap"] = a.cap
        out.append("[[assets]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items()))
    return "\n".join(out) + DEMO_TOML


class Demo:
    def __init__(self, cfg: Config, toml: Path) -> None:
        self.cfg = cfg
        self.toml = toml
        self.lam = cfg.correlation.ewma_lambda
        self.prices = {name: daily_close(path) for name, path in demo_files().items()}
        # Baskets rebalance every NYSE session: member dates restricted to IWM's sessions.
        sessions = self.prices["IWM"].index
        for b in cfg.baskets:
            self.prices[b.key] = basket(
                {m: self.prices[m].reindex(sessions).dropna() for m in b.members}, dict(b.members)
            )

    def ref(self, a: str, b: str, window: int) -> pd.DataFrame:
        return expected(self.prices[a], self.prices[b], window, self.lam)

    def last(self, a: str, b: str, window: int) -> pd.Series:
        return self.ref(a, b, window).iloc[-1]

    def yearly(self, a: str, b: str) -> dict[str, tuple[float, int]]:
        j = pd.concat([self.prices[a].rename("a"), self.prices[b].rename("b")], axis=1, join="inner")
        r = np.log(j.sort_index()).diff().iloc[1:]
        return {
            str(year): (float(g["a"].corr(g["b"])), len(g)) for year, g in r.groupby(r.index.year)
        }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    d = tmp_path_factory.mktemp("cli")
    cfg = build_demo_db(d / "demo.db")
    toml = d / "corrbot.toml"
    toml.write_text(config_toml(cfg, d / "demo.db"), encoding="utf-8")
    return Demo(cfg, toml)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def cli(demo: Demo, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return run(capsys, "--config", str(demo.toml), *argv)


def one_json(out: str) -> dict[str, object]:
    assert out.count("\n") == 1 and out.endswith("\n"), out
    obj = json.loads(out)
    assert isinstance(obj, dict)
    return obj


def one_line_error(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("corrbot: "), err
    assert "Traceback" not in err
    return err


def close(a: float, b: float, tol: float = TOL) -> bool:
    return abs(a - b) <= tol


# ---- corr ----------------------------------------------------------------------------------

CORR_KEYS = {"a", "b", "timeframe", "window", "value", "n", "asof", "ci95", "beta", "ewma", "percentile",
             "percentile_since", "percentile_n"}


def assert_reading_matches(obj: dict[str, object], ref: pd.Series) -> None:
    assert obj["asof"] == ASOF
    assert ref.name == pd.Timestamp(ASOF)
    assert close(obj["value"], ref["value"])  # type: ignore[arg-type]
    lo, hi = obj["ci95"]  # type: ignore[misc]
    assert close(lo, ref["ci_lo"]) and close(hi, ref["ci_hi"])
    assert close(obj["beta"], ref["beta"])  # type: ignore[arg-type]
    assert close(obj["ewma"], ref["ewma"])  # type: ignore[arg-type]
    assert obj["n"] == ref["n"] == obj["window"]


def test_corr_json_default_window(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(demo, capsys, "corr", "BTC", "IWM", "--json")
    assert (rc, err) == (0, "")
    obj = one_json(out)
    assert set(obj) == CORR_KEYS
    assert (obj["a"], obj["b"], obj["timeframe"], obj["window"]) == ("BTC", "IWM", "1d", 90)
    assert_reading_matches(obj, demo.last("BTC", "IWM", 90))


def test_corr_json_window_30_case_insensitive(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(demo, capsys, "corr", "btc", "iwm", "--window", "30", "--json")
    assert rc == 0
    obj = one_json(out)
    assert (obj["a"], obj["b"], obj["window"]) == ("BTC", "IWM", 30)
    assert_reading_matches(obj, demo.last("BTC", "IWM", 30))


@pytest.mark.parametrize(("a", "b"), [("ALTS", "SMALLCAP_TECH"), ("sol", "psct"), ("ETH", "XLK")])
def test_corr_json_other_pairs(demo: Demo, capsys: pytest.CaptureFixture[str], a: str, b: str) -> None:
    rc, out, _ = cli(demo, capsys, "corr", a, b, "--json", "--timeframe", "1d")
    assert rc == 0
    obj = one_json(out)
    assert_reading_matches(obj, demo.last(a.upper(), b.upper(), 90))


def test_corr_reversed_order_same_value(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    fwd = one_json(cli(demo, capsys, "corr", "BTC", "IWM", "--json")[1])
    rc, out, _ = cli(demo, capsys, "corr", "IWM", "BTC", "--json")
    assert rc == 0
    rev = one_json(out)
    assert (rev["a"], rev["b"]) == ("IWM", "BTC")
    for k in ("value", "ci95", "ewma", "n", "asof", "window"):
        assert rev[k] == fwd[k], k
    # β stays that of the crypto asset on the equity asset (as documented on CorrReading).
    assert rev["beta"] == fwd["beta"]


CORR_LINE = re.compile(
    r"^(?P<a>\S+)/(?P<b>\S+) 1d w(?P<w>\d+): (?P<v>[+-]\d\.\d{3}) 95% CI "
    r"\[(?P<lo>[+-]\d\.\d\d), (?P<hi>[+-]\d\.\d\d)\]  n=(?P<n>\d+)"
    r"(?:  1w (?P<chg>[+-]\d\.\d\d))?  β (?P<beta>-?\d\.\d\d)  EWMA (?P<ewma>[+-]\d\.\d\d)"
    r"  as of (?P<asof>\S+)$"
)


def test_corr_text_all_windows(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(demo, capsys, "corr", "BTC", "IWM")
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 2
    for line, w in zip(lines, (30, 90), strict=True):
        m = CORR_LINE.match(line)
        assert m, line
        assert (m["a"], m["b"], int(m["w"]), int(m["n"]), m["asof"]) == ("BTC", "IWM", w, w, ASOF)
        ref = demo.ref("BTC", "IWM", w)
        last = ref.iloc[-1]
        assert close(float(m["v"]), last["value"], 0.0005 + TOL)
        for g, col in (("lo", "ci_lo"), ("hi", "ci_hi"), ("beta", "beta"), ("ewma", "ewma")):
            assert close(float(m[g]), last[col], 0.005 + TOL), g
        # 1w: now minus the value at or before 7 calendar days earlier.
        week_ago = ref["value"][ref.index <= last.name - pd.Timedelta(days=7)].iloc[-1]
        assert m["chg"] is not None
        assert close(float(m["chg"]), last["value"] - week_ago, 0.005 + TOL)


# ---- rank ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "window"), [("BTC", None), ("eth", 30), ("ALTS", 90)])
def test_rank_json(demo: Demo, capsys: pytest.CaptureFixture[str], a: str, window: int | None) -> None:
    argv = ["rank", a, "--json"] + (["--window", str(window)] if window else [])
    rc, out, err = cli(demo, capsys, *argv)
    assert (rc, err) == (0, "")
    obj = one_json(out)
    assert set(obj) == {"a", "window", "timeframe", "asof", "ranking"}
    w = window or 90
    assert (obj["a"], obj["window"], obj["timeframe"], obj["asof"]) == (a.upper(), w, "1d", ASOF)
    ranking = obj["ranking"]
    assert isinstance(ranking, list) and len(ranking) == 8
    assert all(set(r) == {"b", "value", "n"} for r in ranking)
    assert {r["b"] for r in ranking} == COUNTERPARTS
    values = [r["value"] for r in ranking]
    assert values == sorted(values, reverse=True)
    for r in ranking:
        ref = demo.last(a.upper(), r["b"], w)
        assert close(r["value"], ref["value"]), r
        assert r["n"] == w
    ref_order = sorted(COUNTERPARTS, key=lambda b: -demo.last(a.upper(), b, w)["value"])
    assert [r["b"] for r in ranking] == ref_order


def test_rank_default_asset(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    a = one_json(cli(demo, capsys, "rank", "--json")[1])
    b = one_json(cli(demo, capsys, "rank", "BTC", "--json")[1])
    assert a == b and a["a"] == "BTC"


RANK_ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+([+-]\d\.\d{4})\s+(\d+)$")


def test_rank_text(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(demo, capsys, "rank", "BTC")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == f"BTC — 1d correlation, window 90, as of {ASOF}"
    rows = [m.groups() for m in map(RANK_ROW.match, lines[2:]) if m]
    assert len(rows) == len(lines) - 2 == 8
    assert [int(r[0]) for r in rows] == list(range(1, 9))
    for _, b, v, n in rows:
        assert close(float(v), demo.last("BTC", b, 90)["value"], 0.00005 + TOL), b
        assert int(n) == 90
    assert [float(r[2]) for r in rows] == sorted((float(r[2]) for r in rows), reverse=True)


# ---- history -------------------------------------------------------------------------------


def test_history_json(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(demo, capsys, "history", "BTC", "--json")
    assert (rc, err) == (0, "")
    obj = one_json(out)
    assert set(obj) == {"a", "by", "rows"}
    assert (obj["a"], obj["by"]) == ("BTC", "year")
    rows = obj["rows"]
    assert isinstance(rows, list)
    assert all(set(r) == {"period", "b", "value", "n"} for r in rows)
    got = {(r["period"], r["b"]): (r["value"], r["n"]) for r in rows}
    assert len(got) == len(rows)
    expect = {
        (year, b): vn for b in COUNTERPARTS for year, vn in demo.yearly("BTC", b).items()
    }
    assert set(got) == set(expect)
    assert {p for p, _ in got} == {str(y) for y in range(2019, 2026)}
    for key, (v, n) in expect.items():
        gv, gn = got[key]
        assert gn == n, key
        assert close(gv, v), key
    assert [r["period"] for r in rows] == sorted(r["period"] for r in rows)


def parse_history(out: str) -> tuple[str, dict[tuple[str, str], float]]:
    lines = out.splitlines()
    cols = lines[1].split()
    assert cols[0] == "year"
    table = {}
    for line in lines[2:]:
        year, *vals = line.split()
        assert len(vals) == len(cols) - 1
        for c, v in zip(cols[1:], vals, strict=True):
            table[(year, c)] = float(v)
    return lines[0], table


def test_history_text(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(demo, capsys, "history", "btc")
    assert rc == 0
    head, table = parse_history(out)
    assert head == "BTC — correlation of daily returns by year"
    assert {c for _, c in table} == COUNTERPARTS
    assert {y for y, _ in table} == {str(y) for y in range(2019, 2026)}
    for (year, b), v in table.items():
        assert close(v, demo.yearly("BTC", b)[year][0], 0.0005 + TOL), (year, b)


# ---- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["corr", "BTX", "IWM"], ["unknown asset", "'BTX'", "BTC"]),
        (["corr", "BTC", "IWX", "--json"], ["unknown asset", "'IWX'", "IWM"]),
        (["rank", "BTX", "--json"], ["unknown asset", "BTC"]),
        (["history", "BTX"], ["unknown asset", "BTC"]),
        (["corr", "BTC", "IWM", "--window", "45"], ["window 45", "30, 90"]),
        (["corr", "BTC", "IWM", "--window", "45", "--json"], ["window 45", "30, 90"]),
        (["rank", "BTC", "--window", "45"], ["window 45", "30, 90"]),
        (["corr", "BTC", "IWM", "--timeframe", "1h"], ["timeframe '1h'", "1d"]),
        (["corr", "BTC", "IWM", "--timeframe", "1h", "--json"], ["timeframe '1h'", "1d"]),
        (["rank", "BTC", "--timeframe", "1h"], ["timeframe '1h'", "1d"]),
        (["corr", "BTC", "IWM", "--timeframe", "5m"], ["timeframe '5m'"]),
        (["corr", "BTC", "ETH"], ["BTC and ETH are not a watched pair", "IWM"]),
        (["corr", "IWM", "PSCT", "--json"], ["IWM and PSCT are not a watched pair"]),
    ],
)
def test_bad_input_exit_2(
    demo: Demo, capsys: pytest.CaptureFixture[str], argv: list[str], needles: list[str]
) -> None:
    rc, out, err = cli(demo, capsys, *argv)
    assert rc == 2
    assert out == ""
    one_line_error(err)
    for n in needles:
        assert n in err, err


@pytest.mark.parametrize(
    "argv", [["corr", "BTC", "IWM"], ["corr", "BTC", "IWM", "--json"], ["rank", "BTC"], ["history", "BTC"]]
)
def test_missing_db_exit_1_and_not_created(
    demo: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    db = tmp_path / "missing.db"
    toml = tmp_path / "c.toml"
    toml.write_text(config_toml(demo.cfg, db), encoding="utf-8")
    rc, out, err = run(capsys, "--config", str(toml), *argv)
    assert rc == 1
    assert out == ""
    one_line_error(err)
    assert str(db) in err and "does not exist" in err
    assert not db.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["corr", "BTC", "IWM", "--window", "abc"])
    assert ei.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


# ---- import --------------------------------------------------------------------------------


def bars_dump(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT * FROM bars ORDER BY asset, timeframe, ts").fetchall()


IMPORT_LINE = re.compile(
    r"^(\S+) 1d \((\S+)\): (\d+) rows read, (\d+) new, (\d+) updated, (\d+) unchanged, (\d+) skipped$"
)


def test_import_csv_via_cli(demo: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "fresh.db"
    toml = tmp_path / "c.toml"
    toml.write_text(config_toml(demo.cfg, db), encoding="utf-8")
    iwm = TEST_DATA / "IWM_daily_close.csv"
    btc = DEMO_DATA / "BTC-USD_daily.csv"
    n_iwm = sum(1 for line in iwm.read_text().splitlines()[1:] if line.strip())

    rc, out, err = run(capsys, "--config", str(toml), "import", "iwm", str(iwm))
    assert (rc, err) == (0, "")
    m = IMPORT_LINE.match(out.splitlines()[0])
    assert m, out
    assert m[1] == "IWM"
    assert [int(x) for x in m.groups()[2:]] == [n_iwm, n_iwm, 0, 0, 0]
    assert out.splitlines()[-1].startswith("1d:")
    assert len(bars_dump(db)) == n_iwm

    rc, out, _ = run(capsys, "--config", str(toml), "import", "IWM", str(iwm))
    assert rc == 0
    m = IMPORT_LINE.match(out.splitlines()[0])
    assert m, out
    assert [int(x) for x in m.groups()[2:]] == [n_iwm, 0, 0, n_iwm, 0]

    # A second asset makes a pair: the import computes it, and `corr` reads it.
    rc, out, _ = run(capsys, "--config", str(toml), "import", "BTC", str(btc))
    assert rc == 0
    m = IMPORT_LINE.match(out.splitlines()[0])
    assert m and m[1] == "BTC" and int(m[4]) == int(m[3]) > 2000, out
    assert "new observations" in out.splitlines()[-1]
    rc, out, _ = run(capsys, "--config", str(toml), "corr", "BTC", "IWM", "--json", "--window", "30")
    assert rc == 0
    obj = one_json(out)
    ref = expected(daily_close(btc), daily_close(iwm), 30, demo.lam).iloc[-1]
    assert obj["asof"] == ref.name.date().isoformat()
    assert close(obj["value"], ref["value"])  # type: ignore[arg-type]

    # A broken file (a later price changed, then a duplicated line): error, nothing written.
    before = bars_dump(db)
    lines = iwm.read_text().splitlines(keepends=True)
    date, price = lines[4].rstrip("\n").split(",")
    lines[4] = f"{date},{float(price) * 1.5}\n"
    lines.insert(11, lines[10])  # data line on physical line 11 repeated as line 12
    broken = tmp_path / "IWM_broken.csv"
    broken.write_text("".join(lines))
    rc, out, err = run(capsys, "--config", str(toml), "import", "IWM", str(broken))
    assert rc in (1, 2)
    assert out == ""
    one_line_error(err)
    assert re.search(r"IWM_broken\.csv:12: duplicate timestamp .* on lines 11 and 12", err), err
    assert "duplicate" in err.lower()
    assert bars_dump(db) == before


def test_import_unknown_asset_and_basket(
    demo: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "fresh.db"
    toml = tmp_path / "c.toml"
    toml.write_text(config_toml(demo.cfg, db), encoding="utf-8")
    iwm = str(TEST_DATA / "IWM_daily_close.csv")
    rc, _, err = run(capsys, "--config", str(toml), "import", "IWX", iwm)
    assert rc == 2 and "unknown asset" in one_line_error(err) and "IWM" in err
    rc, _, err = run(capsys, "--config", str(toml), "import", "SMALLCAP_TECH", iwm)
    assert rc == 2 and "basket" in one_line_error(err)
    rc, _, err = run(capsys, "--config", str(toml), "import", "IWM", str(tmp_path / "nope.csv"))
    assert rc in (1, 2) and "nope.csv" in one_line_error(err)


# ---- demo ----------------------------------------------------------------------------------


def section(out: str, head: str) -> list[str]:
    lines = out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(head))
    j = next((k for k in range(i, len(lines)) if not lines[k].strip()), len(lines))
    return lines[i:j]


def test_demo_command_twice(demo: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "sub" / "x.db"
    rc, out, err = run(capsys, "demo", "--db", str(db))
    assert (rc, err) == (0, "")
    imported = re.findall(r"^imported (\S+)\s+1d: (\d+) rows \((\d+) new\)$", out, re.M)
    assert len(imported) == 11
    assert all(int(new) == int(rows) > 1000 for _, rows, new in imported)

    rank = section(out, "BTC — 1d correlation, window 90")
    assert rank[0] == f"BTC — 1d correlation, window 90, as of {ASOF}"
    rows = [RANK_ROW.match(line) for line in rank[2:]]
    assert len(rows) == 8 and all(rows)
    for m in rows:
        assert m is not None
        assert close(float(m[3]), demo.last("BTC", m[2], 90)["value"], 0.00005 + TOL)
    _, table = parse_history("\n".join(section(out, "BTC — correlation of daily returns by year")))
    assert sorted({y for y, _ in table}) == [str(y) for y in range(2019, 2026)]
    assert {c for _, c in table} == COUNTERPARTS
    assert f"database: {db}" in out
    first = bars_dump(db)
    with sqlite3.connect(db) as conn:
        n_corr = conn.execute("SELECT count(*) FROM corr").fetchone()[0]
    assert n_corr > 100_000

    rc, out2, err = run(capsys, "demo", "--db", str(db))
    assert (rc, err) == (0, "")
    again = re.findall(r"^imported (\S+)\s+1d: (\d+) rows \((\d+) new\)$", out2, re.M)
    assert [(a, rows) for a, rows, _ in again] == [(a, rows) for a, rows, _ in imported]
    assert all(new == "0" for _, _, new in again)
    assert "1d: 0 rows, 0 new observations" in out2
    assert bars_dump(db) == first
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM corr").fetchone()[0] == n_corr
    # Same tables (the import/summary lines aside).
    assert out2.split("\n\n", 1)[1] == out.split("\n\n", 1)[1]


# ---- the console script --------------------------------------------------------------------


def test_console_script(tmp_path: Path) -> None:
    exe = REPO / ".venv" / "bin" / "corrbot"
    if not exe.exists():
        found = shutil.which("corrbot")
        if found is None:
            pytest.skip("corrbot console script not installed")
        exe = Path(found)
    env = {k: v for k, v in os.environ.items() if k != "CORRBOT_CONFIG"}
    v = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert v.returncode == 0, v.stderr
    assert re.fullmatch(r"corrbot \S+\n", v.stdout), v.stdout

    d = subprocess.run(
        [str(exe), "demo"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
    )
    assert d.returncode == 0, d.stderr
    assert "Traceback" not in d.stderr
    assert (tmp_path / "corrbot-demo.db").is_file()  # the default --db, in the working directory
    assert f"BTC — 1d correlation, window 90, as of {ASOF}" in d.stdout
    assert "BTC — correlation of daily returns by year" in d.stdout

    bad = subprocess.run(
        [str(exe), "--config", str(tmp_path / "none.toml"), "check-config"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stdout == "" and bad.stderr.count("\n") == 1 and "not found" in bad.stderr
