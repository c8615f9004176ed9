"""service: configuration, the pipeline, read-side queries, CLI and scheduler wiring."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("corrbot")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"
