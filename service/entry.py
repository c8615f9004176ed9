"""The `corrbot` console script: a light front door for service.cli.

The stop handlers (`service.signals`) are installed before the heavy imports, so a SIGTERM
at any moment of start-up ends `corrbot run` cleanly.
"""

from __future__ import annotations

import sys

from service.signals import early_stop


def main() -> int:
    stop = early_stop() if "run" in sys.argv[1:] else None
    from service.cli import main as cli_main  # the heavy imports, after the handlers

    return cli_main(stop=stop)
