"""The incremental correlation engine: one step per observation, all pairs at once.

The engine keeps, per pair, the last aligned log prices, a buffer of the last ``max(windows)``
aligned log returns and the EWMA sufficient statistics. `Engine.step` consumes one
observation timestamp (the log prices of every column at that instant, NaN where a column
has no observation) and returns the new rows for every pair that got a return, for every
window. Work per step is O(pairs × window) in a few numpy operations, independent of how
much history exists — that is what makes a new bar cheap. A full recompute is the same
stepping from an empty state, so history and live updates cannot disagree.

State round-trips through `Engine.export_state` / `import_state` (the pipeline checkpoints it
in SQLite), so a restart resumes exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from monitors.stats import ewma_corr, ewma_push, window_stats

_HEAD = 5  # last_ts, last_la, last_lb, last_session, n — then 6 EWMA sums, then 2 buffers


@dataclass(frozen=True)
class WindowRows:
    """New rows for one window: pair indices and their statistics (NaN = no value yet)."""

    window: int
    pair: np.ndarray
    n: np.ndarray
    value: np.ndarray
    ci_lo: np.ndarray
    ci_hi: np.ndarray
    beta: np.ndarray
    ewma: np.ndarray


class Engine:
    def __init__(
        self,
        pair_cols: Sequence[tuple[int, int]],
        windows: Sequence[int],
        *,
        intraday: bool,
        lam: float,
    ) -> None:
        self.ia = np.array([a for a, _ in pair_cols], dtype=np.int64)
        self.ib = np.array([b for _, b in pair_cols], dtype=np.int64)
        self.windows = sorted(windows)
        self.wmax = self.windows[-1]
        self.intraday = intraday  # returns may not span sessions
        self.lam = lam
        p = len(pair_cols)
        self.last_ts = np.full(p, np.iinfo(np.int64).min, dtype=np.int64)
        self.last_la = np.full(p, np.nan)
        self.last_lb = np.full(p, np.nan)
        self.last_sess = np.full(p, -1, dtype=np.int64)
        self.n = np.zeros(p, dtype=np.int64)
        self.ew = np.zeros((p, 6))
        self.bx = np.zeros((p, self.wmax))
        self.by = np.zeros((p, self.wmax))

    @property
    def state_size(self) -> int:
        return _HEAD + 6 + 2 * self.wmax

    def reset(self, pairs: np.ndarray) -> None:
        self.last_ts[pairs] = np.iinfo(np.int64).min
        self.last_la[pairs] = np.nan
        self.last_lb[pairs] = np.nan
        self.last_sess[pairs] = -1
        self.n[pairs] = 0
        self.ew[pairs] = 0.0
        self.bx[pairs] = 0.0
        self.by[pairs] = 0.0

    def step(self, ts: int, session: int, logp: np.ndarray) -> list[WindowRows]:
        """Consume the observation at ``ts``; return the new rows per window."""
        la = logp[self.ia]
        lb = logp[self.ib]
        active = (self.last_ts < ts) & np.isfinite(la) & np.isfinite(lb)
        ret = active & np.isfinite(self.last_la)
        if self.intraday:
            ret &= self.last_sess == session
        k = np.flatnonzero(ret)
        if k.size:
            rx = la[k] - self.last_la[k]
            ry = lb[k] - self.last_lb[k]
            bx = self.bx[k]
            by = self.by[k]
            bx[:, :-1] = bx[:, 1:]
            by[:, :-1] = by[:, 1:]
            bx[:, -1] = rx
            by[:, -1] = ry
            self.bx[k] = bx
            self.by[k] = by
            self.n[k] += 1
            ew = self.ew[k]
            ewma_push(ew, rx, ry, self.lam)
            self.ew[k] = ew
        act = np.flatnonzero(active)
        self.last_la[act] = la[act]
        self.last_lb[act] = lb[act]
        self.last_sess[act] = session
        self.last_ts[act] = ts
        if not k.size:
            return []
        out = []
        nk = self.n[k]
        for w in self.windows:
            full = nk >= w
            kf = k[full]
            value = np.full(k.size, np.nan)
            lo, hi, beta, ewc = value.copy(), value.copy(), value.copy(), value.copy()
            if kf.size:
                r, l_, h_, b_ = window_stats(self.bx[kf, -w:], self.by[kf, -w:])
                value[full], lo[full], hi[full], beta[full] = r, l_, h_, b_
                ewc[full] = ewma_corr(self.ew[kf])
            out.append(WindowRows(w, k, np.minimum(nk, w), value, lo, hi, beta, ewc))
        return out

    # ---- checkpointing --------------------------------------------------------------

    def export_state(self, pair: int) -> bytes:
        head = np.array(
            [self.last_ts[pair], self.last_la[pair], self.last_lb[pair], self.last_sess[pair], self.n[pair]],
            dtype=np.float64,
        )
        return np.concatenate([head, self.ew[pair], self.bx[pair], self.by[pair]]).tobytes()

    def export_states(self, pairs: np.ndarray) -> list[bytes]:
        """`export_state` of many pairs at once (one array build, then one slice per pair)."""
        k = pairs.size
        arr = np.empty((k, self.state_size))
        arr[:, 0] = self.last_ts[pairs]
        arr[:, 1] = self.last_la[pairs]
        arr[:, 2] = self.last_lb[pairs]
        arr[:, 3] = self.last_sess[pairs]
        arr[:, 4] = self.n[pairs]
        arr[:, _HEAD : _HEAD + 6] = self.ew[pairs]
        arr[:, _HEAD + 6 : _HEAD + 6 + self.wmax] = self.bx[pairs]
        arr[:, _HEAD + 6 + self.wmax :] = self.by[pairs]
        return [row.tobytes() for row in arr]

    def import_state(self, pair: int, blob: bytes) -> bool:
        """Restore one pair; False (pair left empty) if the blob does not fit this engine."""
        arr = np.frombuffer(blob, dtype=np.float64)
        if arr.size != self.state_size:
            return False
        self.last_ts[pair] = int(arr[0])
        self.last_la[pair], self.last_lb[pair] = arr[1], arr[2]
        self.last_sess[pair] = int(arr[3])
        self.n[pair] = int(arr[4])
        self.ew[pair] = arr[_HEAD : _HEAD + 6]
        self.bx[pair] = arr[_HEAD + 6 : _HEAD + 6 + self.wmax]
        self.by[pair] = arr[_HEAD + 6 + self.wmax :]
        return True
