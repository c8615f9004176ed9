"""The read guard of tests/conftest.py, proven on a throwaway repo in a pytest subprocess.

The throwaway repo gets the real conftest.py and a few tests; a ``shared`` folder beside it plays
the team's data folder beside the repo. Reading from it, during a test or while collecting, fails the
run and names the test and the file; reading inside the repo or from a temp file does not, and
neither does writing beside the repo.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import REPO

TESTS = '''
import sqlite3
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def test_inside_and_temp_files():
    assert (REPO / "tests" / "data" / "ok.csv").read_text() == "Date,Close\\n"
    with tempfile.NamedTemporaryFile("w+") as f:
        f.write("x")
        f.seek(0)
        assert f.read() == "x"


def test_reads_beside():
    assert (SHARED / "data.csv").read_text() == "Date,Close\\n"


def test_sqlite_beside():
    sqlite3.connect(SHARED / "bars.db").close()


def test_writes_beside():
    (SHARED / "out.txt").write_text("a write is not a read")
'''
AT_IMPORT = """
from pathlib import Path

ROWS = (Path(__file__).resolve().parent.parent.parent / "shared" / "data.csv").read_text()


def test_nothing():
    pass
"""


def test_guard_fails_the_run_naming_test_and_file(tmp_path: Path) -> None:
    repo, shared = tmp_path / "repo", tmp_path / "shared"
    (repo / "tests" / "data").mkdir(parents=True)
    shared.mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", repo / "tests" / "conftest.py")
    (repo / "tests" / "test_reads.py").write_text(TESTS)
    (repo / "tests" / "data" / "ok.csv").write_text("Date,Close\n")
    (shared / "data.csv").write_text("Date,Close\n")
    sqlite3.connect(shared / "bars.db").close()

    def pytest(*args: str) -> tuple[int, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
            cwd=repo, env=env, capture_output=True, text=True, timeout=300,
        )
        return proc.returncode, proc.stdout + proc.stderr

    rc, out = pytest("tests/test_reads.py::test_inside_and_temp_files", "tests/test_reads.py::test_writes_beside")
    assert rc == 0 and "2 passed" in out, out
    assert (shared / "out.txt").exists()

    rc, out = pytest("tests")
    assert rc == 1, out
    assert "4 passed, 2 errors" in out, out  # the two readers error at teardown
    data, db = os.path.realpath(shared / "data.csv"), os.path.realpath(shared / "bars.db")
    assert f"tests/test_reads.py::test_reads_beside read outside the repository: {data}" in out, out
    assert f"tests/test_reads.py::test_sqlite_beside read outside the repository: {db}" in out, out
    assert "test_inside_and_temp_files read" not in out and "test_writes_beside read" not in out

    # A read while collecting is no test's: the run still fails, naming the module.
    (repo / "tests" / "test_at_import.py").write_text(AT_IMPORT)
    rc, out = pytest("tests/test_at_import.py")
    assert rc == 1 and "1 passed" in out, out
    assert "files read from outside the repository" in out, out
    assert f"collecting tests/test_at_import.py: {data}" in out, out
