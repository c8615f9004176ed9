"""Shared fixtures (the repo's real test data, temporary databases) and the read guard.

Read guard: the tests must run from a fresh clone, so they may read nothing from outside the
repository (such as a ``../shared`` folder beside it). An audit hook records every file opened
for reading (``open``, ``os.open``, ``sqlite3.connect``) whose real path is outside the repo and
outside the interpreter, temporary and system directories; a path beside the repo (under its
parent directory) counts even when that parent is itself a temporary directory, unless a test
created it there (``tempfile``). The test that read it then errors, naming the file, and the run
fails (reads during collection or in wider fixtures are reported at the end). Subprocesses and
code outside Python (C libraries) are not watched.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"  # real market data and recorded API responses (PROVENANCE.md)
DEMO_DATA = REPO / "service" / "demo_data"  # the demo's bundled real data, shared with the tests


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return TEST_DATA


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "corrbot.db"


@pytest.fixture(scope="session")
def fault_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fault-matrix tests' seeded database (tests/fault_world.py), built once per session."""
    from fault_world import build_seed

    return build_seed(tmp_path_factory.mktemp("fault-seed"))


@pytest.fixture(scope="session")
def fault_full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same backfill carried to the end of the served data (the kill trials' equity bars)."""
    from fault_world import build_seed

    return build_seed(tmp_path_factory.mktemp("fault-full"), until="2025-07-11")


# ---- read guard ------------------------------------------------------------------------------

_SYSTEM_DIRS = (
    "/usr", "/etc", "/proc", "/dev", "/sys", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/run",
    "/System", "/Library", "/private/etc", "/private/var/db/timezone", "/nix/store",
)
_ACCMODE = os.O_RDONLY | os.O_WRONLY | os.O_RDWR  # os.O_ACCMODE, which Windows lacks


def _real(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(path)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _user_dirs() -> list[Path]:
    """Temp and per-user cache/config dirs that libraries read (matplotlib, yfinance, hypothesis)."""
    tmp = Path(tempfile.gettempdir())  # also creates tempfile's probe file before the hook runs
    dirs = [tmp, Path.cwd() / ".hypothesis"]
    with contextlib.suppress(Exception):  # no user name or home in some containers
        dirs.append(tmp / f"pytest-of-{getpass.getuser()}")
    with contextlib.suppress(Exception):
        home = Path.home()
        dirs += [home / ".cache", home / ".config", home / ".matplotlib", home / "Library" / "Caches"]
    env = ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR", "HYPOTHESIS_STORAGE_DIRECTORY",
           "PYTEST_DEBUG_TEMPROOT")
    return dirs + [Path(os.environ[k]) for k in env if os.environ.get(k)]


class _ReadGuard:
    def __init__(self) -> None:
        self.repo = str(REPO)
        self.parent = _real(REPO.parent)
        prefixes = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
        self.roots = list(dict.fromkeys(_real(r) for r in [*prefixes, *_user_dirs(), *_SYSTEM_DIRS]))
        self.current = "<session start>"
        self.reads: list[tuple[str, str]] = []  # (test or phase, real path)

    def allow(self, root: str | os.PathLike[str]) -> None:
        self.roots.append(_real(root))  # append only: other threads may be iterating

    def outside(self, path: str) -> bool:
        if _under(path, self.repo):
            return False
        # Beside the repo only roots that are themselves beside it (a venv, a test's temp dir)
        # count, not the temp dir or home that merely contains the repo's parent.
        beside = _under(path, self.parent)
        return not any(
            _under(path, r) and not (beside and _under(self.parent, r)) for r in self.roots
        )

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        try:
            if event == "open":
                path, mode, flags = args
                if isinstance(path, int):
                    return
                if mode is None:  # os.open: flags decide; creating a new file reads nothing
                    if flags & _ACCMODE == os.O_WRONLY or flags & os.O_EXCL:
                        return
                elif "r" not in mode and "+" not in mode:
                    return
            elif event == "sqlite3.connect":
                path = os.fsdecode(args[0])
                if path in ("", ":memory:") or "mode=memory" in path:
                    return
                path = path.removeprefix("file:").split("?")[0]
            elif event in ("tempfile.mkdtemp", "tempfile.mkstemp"):
                self.allow(args[0])
                return
            else:
                return
            real = _real(os.fsdecode(path))
            if self.outside(real):
                self.reads.append((self.current, real))
        except Exception:  # never break the open itself
            pass

    def of(self, test: str) -> list[str]:
        return sorted({p for t, p in self.reads if t == test})


_GUARD = _ReadGuard()
sys.addaudithook(_GUARD.audit)


def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp:
        _GUARD.allow(config.option.basetemp)


def pytest_collectstart(collector: pytest.Collector) -> None:
    _GUARD.current = f"collecting {collector.nodeid or 'the session'}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    _GUARD.current = item.nodeid
    try:
        return (yield)
    finally:
        _GUARD.current = "<between tests>"


@pytest.fixture(autouse=True)
def _no_reads_outside_repo(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    paths = _GUARD.of(request.node.nodeid)
    if paths:
        pytest.fail(f"{request.node.nodeid} read outside the repository: {', '.join(paths)}",
                    pytrace=False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _GUARD.reads and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _GUARD.reads:
        terminalreporter.section("files read from outside the repository", sep="!", red=True)
        for who, path in dict.fromkeys(_GUARD.reads):
            terminalreporter.write_line(f"{who}: {path}", red=True)
