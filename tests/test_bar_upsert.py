"""`upsert_bars` writes bars 32 to an INSERT statement: overlapping batches of real hourly bars
(block remainders, slices that are not multiples of 32, NaN values, a missing column) must
leave exactly what an independent pandas model of "new or changed rows replace, the rest stay"
says, with the same counts and dirty marker."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import REPO

from storage.bars import COLUMNS, upsert_bars
from storage.db import open_db

KLINES = REPO / "tests" / "data" / "intraday" / "BTCUSDT_1h_binance_2023-2026.csv"


def _real_bars() -> pd.DataFrame:
    raw = pd.read_csv(KLINES)
    ts = (pd.to_datetime(raw["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return pd.DataFrame({c: raw[c].to_numpy(np.float64) for c in COLUMNS},
                        index=pd.Index(ts.to_numpy(np.int64), name="ts"))


def _model(stored: pd.DataFrame, sources: pd.Series, batch: pd.DataFrame,
           source: str) -> tuple[pd.DataFrame, pd.Series, tuple[int, int, int], int | None]:
    """Independent of storage/bars.py: a row is new, changed (any value differs beyond 1e-12
    relative, NaN equal to NaN) or unchanged; new and changed rows replace the stored ones."""
    full = batch.reindex(columns=list(COLUMNS))
    old = stored.reindex(full.index)
    known = full.index.isin(stored.index)
    differs = ~(((full - old).abs() <= 1e-12 * old.abs()) | (full.isna() & old.isna())).all(axis=1)
    changed = known & differs.to_numpy()
    written = full.index[~known | changed]
    out = pd.concat([stored.drop(full.index[changed]), full.loc[written]]).sort_index()
    src = pd.concat([sources.drop(full.index[changed]), pd.Series(source, index=written)]).sort_index()
    counts = (int((~known).sum()), int(changed.sum()), int(len(full) - (~known).sum() - changed.sum()))
    return out, src, counts, (int(written.min()) if len(written) else None)


def test_overlapping_batches_store_what_the_model_says(tmp_path):
    bars = _real_bars()
    a = bars.iloc[:20_001].copy()
    a.loc[a.index[::7], "volume"] = np.nan  # stored as NULL
    b = bars.iloc[19_000:25_037].copy()
    b.iloc[100:170, b.columns.get_loc("close")] *= 1.5  # 70 changed closes inside the overlap
    b.iloc[500:533, b.columns.get_loc("open")] *= 1 + 1e-13  # within the tolerance: unchanged
    c = bars.iloc[24_990:].drop(columns=["volume"])  # no volume column: stored volumes change to NULL
    db = open_db(tmp_path / "bars.db")
    stored = pd.DataFrame(columns=list(COLUMNS), dtype=np.float64, index=pd.Index([], dtype=np.int64))
    sources = pd.Series(dtype=object)
    first_written: list[int] = []
    for batch, source, slice_rows in ((a, "a", 200_000), (b, "b", 333), (c, "c", 1_000)):
        got = upsert_bars(db, "BTC", "1h", batch, source, slice_rows=slice_rows)
        stored, sources, counts, first = _model(stored, sources, batch, source)
        assert (got.inserted, got.updated, got.unchanged) == counts
        if first is not None:
            first_written.append(first)
    assert (got.inserted, got.updated) == (len(bars) - 25_037, 47)  # c: 47 overlapping volumes
    rows = db.execute("SELECT ts, open, high, low, close, volume, source FROM bars "
                      "WHERE asset = 'BTC' AND timeframe = '1h' ORDER BY ts").fetchall()
    table = pd.DataFrame(rows, columns=["ts", *COLUMNS, "source"]).set_index("ts")
    assert table.index.tolist() == stored.index.tolist()
    pd.testing.assert_frame_equal(table[list(COLUMNS)].astype(np.float64), stored, check_exact=True,
                                  check_names=False)
    assert table["source"].tolist() == sources.tolist()
    assert db.execute("SELECT since_ts FROM dirty WHERE asset = 'BTC' AND timeframe = '1h'").fetchone()[0] \
        == min(first_written)
