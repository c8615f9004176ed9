"""Bar sizes: the one table of timeframe -> seconds, shared by feeds, import and alignment."""

from __future__ import annotations

TIMEFRAME_SECONDS: dict[str, int] = {"30m": 1800, "1h": 3600, "1d": 86400}
# Crypto candle sizes sampled onto the NYSE clock (finer first).
INTRADAY_CRYPTO: dict[str, int] = {"30m": 1800, "1h": 3600}
