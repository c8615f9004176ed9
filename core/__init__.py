"""core: the ground floor every layer stands on — config model, exception hierarchy, version,
clock, NYSE calendar, timeframe table and the one retry helper. Imports nothing of corrbot's."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("corrbot")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"
