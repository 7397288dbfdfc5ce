"""Flow-level contention in the engine: collectives that share NICs and fabric uplinks share bandwidth.

``FabricDriver`` is a simpy process around a ``FlowNetwork`` (max-min fair rates from a numba kernel).
A collective that crosses the scale-out fabric becomes one flow per rail hop of every group it stands
for (``FabricLinks.rail_pairs``), carrying the bytes each member pushes through its NIC under the chosen
algorithm. Rates are re-solved whenever a flow starts or finishes; the collective completes when its
last flow has drained. The rest of the collective (latency, scale-up phases) is the analytical model's
time minus its uncontended scale-out transfer time, so with no competing traffic both modes agree.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from simcore.cluster import Cluster
from simcore.fabric import FabricLinks, FlowNetwork


class FabricDriver:
    """Owns the flow network of one simulation and wakes waiting collectives as their flows finish."""

    def __init__(self, env: simpy.Environment, cluster: Cluster) -> None:
        self.env = env
        self.net = FlowNetwork()
        self.links = FabricLinks(self.net, cluster)
        self._waiting: dict[int, list[Any]] = {}  # flow id -> [flows left, event] shared by one transfer
        self._wake = env.event()
        self.flows_started = 0
        self.solves = 0
        env.process(self._loop())

    def transfer(self, src: np.ndarray, dst: np.ndarray, nbytes: float) -> simpy.Event:
        """Start flows src[i] -> dst[i] of ``nbytes`` each; the event fires when all have arrived."""
        done = self.env.event()
        if len(src) == 0 or nbytes <= 0:
            done.succeed()
            return done
        indptr, idx = self.links.paths(src, dst)
        ids = self.net.start_many(self.env.now, indptr, idx, np.full(len(src), float(nbytes)))
        self.flows_started += len(ids)
        self.solves += 1
        shared = [len(ids), done]
        for fid in ids.tolist():
            self._waiting[fid] = shared
        if not self._wake.triggered:
            self._wake.succeed()
        return done

    def _loop(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        while True:
            self._wake = env.event()
            nxt = self.net.next_completion()
            if nxt is None:
                yield self._wake  # idle until a transfer starts (the simulation may simply end here)
                continue
            yield env.any_of([env.timeout(max(0.0, nxt[0] - env.now)), self._wake])
            self.net.advance(env.now)
            finished = self.net.completed()
            if len(finished):
                self.net.finish_many(finished)
                self.solves += 1
                for fid in finished.tolist():
                    shared = self._waiting.pop(fid)
                    shared[0] -= 1
                    if shared[0] == 0:
                        shared[1].succeed()
