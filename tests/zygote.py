"""A pre-imported interpreter that forks `corrbot` processes on request (for the kill trials).

Starting `corrbot run` costs ~3 s of CPU in imports (pandas, ccxt, yfinance, PTB); fifty kill
trials would spend minutes on that alone. This process imports the service once and then, per
line ``{"argv": [...], "log": path}`` on stdin, forks a child that runs the console script's
``main`` with that argv, stdout and stderr to ``log`` — a real process of its own, killed with
a real SIGKILL. It answers ``pid <pid>`` at once and ``exit <pid> <status>`` when the child ends
(status as in ``Popen.returncode``: negative for a signal). No threads run here before a fork.
"""

from __future__ import annotations

import json
import os
import select
import sys

import service.cli
import service.runner  # noqa: F401
from service import entry


def _child(argv: list[str], log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    sys.argv = ["corrbot", *argv]
    code = 1
    try:
        code = entry.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(f"exit {pid} {code}", flush=True)


def main() -> None:
    print("ready", flush=True)
    buf = b""
    while True:
        ready, _, _ = select.select([0], [], [], 0.05)
        _reap()
        if not ready:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = json.loads(line)
            pid = os.fork()
            if pid == 0:
                _child(req["argv"], req["log"])
            print(f"pid {pid}", flush=True)


if __name__ == "__main__":
    main()
