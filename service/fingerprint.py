"""What a stored correlation series depends on, hashed: a change means it must be recomputed.

A pair's series depend on the definition of both sides (an asset is itself; a basket is its
members with their normalised weights), on the windows and λ of the timeframe, and on the
alignment rules (`ALIGNMENT`, bumped whenever monitors/align.py changes what an observation
is, and the intraday candle sizes it samples). Bars changing is handled by the ``dirty``
markers, not here.
"""

from __future__ import annotations

import hashlib
import json

from core.config import Config
from core.timeframes import INTRADAY_CRYPTO

ALIGNMENT = 1  # version of the observation rules in monitors/align.py


def _side(cfg: Config, name: str) -> object:
    basket = cfg.basket_by_key.get(name)
    if basket is None:
        return name
    total = sum(basket.members.values())
    return sorted((m.upper(), round(w / total, 12)) for m, w in basket.members.items())


def pair_fingerprints(cfg: Config, timeframe: str) -> dict[tuple[str, str], str]:
    """(a, b) -> a short hash of everything the pair's stored rows depend on, for ``timeframe``."""
    common = {
        "timeframe": timeframe,
        "windows": cfg.windows_for(timeframe),
        "lambda": cfg.correlation.ewma_lambda,
        "alignment": ALIGNMENT,
        "candles": sorted(INTRADAY_CRYPTO.values()),
    }
    out = {}
    for a, b in cfg.pair_list:
        text = json.dumps({**common, "a": _side(cfg, a), "b": _side(cfg, b)}, sort_keys=True)
        out[(a, b)] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return out
