"""The log policy on a fake clock: a failure once, a summary an hour, its recovery; one line
per warning; library deprecation notices kept out of the service's log.

(The real process under a journal stream is in tests/test_service_ops.py.)
"""

from __future__ import annotations

import io
import logging
import sys
import warnings
from collections.abc import Iterator

import pytest

from feeds.base import FeedResult
from service.health import SourceHealth
from service.logsetup import JournalFormatter, RepeatFilter, configure


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, Clock]]:
    clock = Clock()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RepeatFilter(clock=clock))
    log = logging.getLogger("corrbot.test-policy")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log, out, clock
    log.removeHandler(handler)
    log.propagate = True


def test_a_repeated_warning_is_written_once_then_summarised_hourly(
        captured: tuple[logging.Logger, io.StringIO, Clock]) -> None:
    log, out, clock = captured
    for i in range(12):  # every five minutes for an hour; the delay in it varies
        log.warning("binance: loading markets failed; retrying in %.1fs", 0.5 * (i + 1))
        clock.t += 300
    log.warning("binance: loading markets failed; retrying in %.1fs", 9.0)  # 60 min after the first
    lines = out.getvalue().splitlines()
    assert lines == [
        "WARNING corrbot.test-policy: binance: loading markets failed; retrying in 0.5s",
        "WARNING corrbot.test-policy: binance: loading markets failed; retrying in 9.0s "
        "[repeated 12 times in 1 h 0 min]",
    ]


def test_info_lines_and_tracebacks_are_never_held_back(captured: tuple[logging.Logger, io.StringIO, Clock]) -> None:
    log, out, _ = captured
    for _ in range(3):
        log.info("poll cycle done")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("poll cycle failed")
        log.exception("poll cycle failed")
    text = out.getvalue()
    assert text.count("poll cycle done") == 3
    assert text.count("poll cycle failed") == 2 and text.count("RuntimeError: boom") == 2


def test_a_failure_back_after_two_quiet_hours_is_written_in_full(
        captured: tuple[logging.Logger, io.StringIO, Clock]) -> None:
    log, out, clock = captured
    log.warning("yahoo: IWM: Yahoo unreachable")
    clock.t += 60
    log.warning("yahoo: IWM: Yahoo unreachable")
    clock.t += 2 * 3600 + 1
    log.warning("yahoo: IWM: Yahoo unreachable")
    assert out.getvalue().splitlines() == ["WARNING corrbot.test-policy: yahoo: IWM: Yahoo unreachable"] * 2


def _results(source: str, failing: bool) -> list[FeedResult]:
    return [FeedResult(source, asset, tf, 0, 0, 0, "ExchangeNotAvailable: GET <url>" if failing else None)
            for asset in ("BTC", "ETH") for tf in ("1h", "1d")]


def test_source_health_an_outage_its_summary_and_its_recovery(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    health = SourceHealth(clock=clock)
    caplog.set_level(logging.INFO, logger="corrbot.feeds")
    for _ in range(26):  # two hours and ten minutes of five-minute polls
        health.observe(_results("binance", True) + _results("yahoo", False))
        clock.t += 300
    health.observe(_results("binance", False))
    msgs = [r.getMessage() for r in caplog.records if r.name == "corrbot.feeds"]
    assert msgs == [
        "binance failing: 4 of 4 failed (BTC 1d, BTC 1h, ETH 1d, ETH 1h): ExchangeNotAvailable: GET <url>",
        "binance still failing after 1 h 0 min, 13 polls: 4 of 4 failed (BTC 1d, BTC 1h, ETH 1d, ETH 1h): "
        "ExchangeNotAvailable: GET <url>",
        "binance still failing after 2 h 0 min, 25 polls: 4 of 4 failed (BTC 1d, BTC 1h, ETH 1d, ETH 1h): "
        "ExchangeNotAvailable: GET <url>",
        "binance recovered after 2 h 10 min (26 failed polls)",
    ]
    levels = [r.levelname for r in caplog.records if r.name == "corrbot.feeds"]
    assert levels == ["WARNING", "WARNING", "WARNING", "INFO"]


def test_journal_formatter_puts_the_priority_on_every_line() -> None:
    fmt = JournalFormatter()
    try:
        raise ValueError("bad")
    except ValueError:
        rec = logging.getLogger("x").makeRecord("corrbot.runner", logging.ERROR, __file__, 1, "poll cycle failed",
                                                None, sys.exc_info())
    lines = fmt.format(rec).splitlines()
    assert lines[0] == "<3>corrbot.runner: poll cycle failed"
    assert all(ln.startswith("<3>") for ln in lines) and lines[-1] == "<3>  ValueError: bad"
    info = logging.getLogger("x").makeRecord("corrbot.runner", logging.INFO, __file__, 1, "ready", None, None)
    assert fmt.format(info) == "<6>corrbot.runner: ready"


def test_service_logging_keeps_library_deprecations_out_but_shows_other_warnings(
        capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, warnings.showwarning)
    try:
        configure(verbose=False, service=True)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("inplace is deprecated", DeprecationWarning, stacklevel=1)
            warnings.warn("a future change", FutureWarning, stacklevel=1)
            warnings.warn("values were clipped\nsecond line", RuntimeWarning, stacklevel=1)
        err = capsys.readouterr().err.splitlines()
    finally:
        root.handlers[:], warnings.showwarning = saved[0], saved[2]
        root.setLevel(saved[1])
    assert len(err) == 1, err
    assert "WARNING py.warnings: RuntimeWarning: values were clipped (test_logsetup.py:" in err[0], err
