"""The machine API workloads call, on top of a simpy Environment.

A workload is a set of simpy processes, one per simulated rank class (one per distinct rank in a
symmetric job, every rank with ``--fidelity full``). They ask the machine to ``compute``, run a
``collective`` or ``send``/``recv``; each call returns a simpy event whose duration comes from a
kernel, so ``yield machine.compute(...)`` reads like the workload it models.

Each rank class has named streams (``compute``, ``tp``, ``dp``, ``pp`` ...), as CUDA streams: ops on
one stream run in issue order, ops on different streams overlap. Collectives rendezvous: they start
when every participating class has issued them and their streams are free, and finish together.
Every op becomes a row in the activity recorder.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from heapq import heappush
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import simpy
from simpy.events import NORMAL, Timeout

from simcore.activity import (
    GROUP_IDS,
    KIND_COLLECTIVE,
    KIND_COMPUTE,
    KIND_RECV,
    KIND_SEND,
    OP_IDS,
    ActivityRecorder,
    pack_open_row,
)
from simcore.cluster import TIER_SCALE_UP, Cluster, GroupLayout, ParallelDims
from simcore.kernels.compute import KIND_IDS, ComputeModel
from simcore.profile import Profile

_new_timeout = Timeout.__new__
_FLOPS, _BYTES = itemgetter(0), itemgetter(1)  # of a work item: sum(map(...)) adds in order, as sum(genexpr)
_COST_MEMO_MAX = 200_000  # distinct (work, dtype, clock, name) entries before the memo starts over
_PENDING = float("inf")  # stream busy with a flow-level op whose end is not known yet
_NO_CONTENTION = 1e-9  # concurrency passed to the analytical model when the flow network does the sharing

if TYPE_CHECKING:
    from simcore.contention import FabricDriver


class CommTiming(Protocol):
    time_s: float
    algorithm: str
    protocol: str


class CommModel(Protocol):
    """What the engine needs from a collective cost model (simcore.collectives.CollectiveModel)."""

    def time(
        self,
        op: str,
        nbytes: float,
        layout: GroupLayout,
        algo: str = "auto",
        proto: str = "auto",
        concurrency: float = 1.0,
    ) -> CommTiming: ...


@dataclass
class RankClass:
    """A simulated rank standing for ``multiplicity`` identical GPUs (``gpus`` lists them)."""

    index: int
    name: str
    gpus: np.ndarray
    place: str

    @property
    def multiplicity(self) -> int:
        return len(self.gpus)


@dataclass
class CommGroup:
    """A communicator: which parallel dimension, its physical layout and the classes taking part."""

    kind: str
    layout: GroupLayout
    member_classes: tuple[int, ...]
    key: int = 0
    concurrency: float = 1.0
    rows: np.ndarray | None = None  # GPUs of every group this communicator stands for (flow contention)
    uses_sms: bool = True  # its kernels take SMs from compute (NCCL); False for copy-engine transfers

    @property
    def uses_scale_out(self) -> bool:
        return self.layout.top_tier != TIER_SCALE_UP


@dataclass
class _Rendezvous:
    what: tuple[str, str] = ("", "")  # (op, name) the first member issued; the others must match
    arrived: int = 0
    ready_at: float = 0.0
    done: simpy.Event | None = None
    classes: list[int] = field(default_factory=list)


class Machine:
    """Simulated hardware as the workload sees it: rank classes, streams, and timed operations."""

    def __init__(
        self,
        env: simpy.Environment,
        profile: Profile,
        cluster: Cluster,
        comm_model: CommModel,
        recorder: ActivityRecorder | None = None,
        fabric: FabricDriver | None = None,
    ) -> None:
        self.env = env
        self.profile = profile
        self.cluster = cluster
        self.comm_model = comm_model
        self.compute_model = ComputeModel(profile)
        self.recorder = recorder if recorder is not None else ActivityRecorder()
        self.classes: list[RankClass] = []
        self.streams: dict[str, int] = {"compute": 0}
        # Per class: when each stream has drained (plain lists: scalar access is the hot path).
        self._busy: list[list[float]] = []
        self.clock: list[float] = []  # per-class clock factor f/f_max, updated by the power controller
        # Per class: the clock it never exceeds whatever the power controller allows (a straggler's class)
        self.clock_ceiling: list[float] = []
        # Per rack of the job (GPU g sits in rack g // gpus_per_rack): how much warmer than the supply its
        # coolant arrives (a hot rack); racks not listed get the supply.
        self.rack_supply_offset: dict[int, float] = {}
        self.rack_supply_source: dict[int, tuple[str, str]] = {}  # rack -> (file, field path) that set it
        # Communication kernels share the SMs and HBM with compute: while one runs, compute takes longer by
        # this fraction. Per class: the communication intervals that have not ended yet (unmerged; the
        # slowdown integrates over their union) and the latest end among them (the hot path's one check).
        self.overlap_slowdown = profile.calibration.comm_overlap_slowdown
        self._comm_windows: list[list[tuple[float, float]]] = []
        self._comm_until: list[float] = []
        # The host thread of each class issues its kernels in program order, ``host_kernel_s`` each; it runs
        # ahead of the GPU until a host synchronisation (a device-to-host copy) makes it wait. Per class:
        # when it will have issued everything issued so far. A kernel cannot end before it is issued.
        self.host_kernel_s = profile.calibration.host_kernel_time
        self.step_host_s = profile.calibration.step_host_time  # per training step, before its first kernel
        # Each kernel's fixed GPU cost (launch gap, ramp-up, last-wave drain); the roofline charges one per op.
        self.kernel_overhead_s = profile.accelerator.kernel_overhead
        self._host: list[float] = []
        self.host_wait: list[float] = []  # per class: compute-stream time spent waiting for launches
        self._cost_memo: dict[int, tuple[Any, ...]] = {}  # id(work) -> _fused_cost entry
        self._fused_entries: dict[tuple, tuple[Any, ...]] = {}  # (work, dtype, clock, name) -> entry
        self._open_buf = self.recorder.open_buf  # hot path: rows packed onto it in place
        self._block_bytes = self.recorder.block_bytes
        self._groups: list[CommGroup] = []
        self._rendezvous: dict[tuple[int, int], _Rendezvous] = {}
        self._group_calls: dict[tuple[int, int], int] = {}
        self._mailbox: dict[Any, simpy.Event] = {}
        self._mem_now = np.zeros(0)
        self.mem_peak = np.zeros(0)
        self.class_step: list[int] = []  # training step each class is in (classes drift apart in a pipeline)
        self.comm_log: dict[str, int] = {}
        # Flow-level contention (optional): the fabric, the job's parallel layout to find group members,
        # and per-stream tails for collectives whose end is not known when they start.
        self.fabric = fabric
        self.dims: ParallelDims | None = None
        self._tail: dict[tuple[int, int], simpy.Event] = {}
        self._rows_memo: dict[tuple, np.ndarray | None] = {}
        self._pairs_memo: dict[tuple[int, bool], tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ setup
    def add_class(self, name: str, gpus: np.ndarray) -> int:
        gpus = np.asarray(gpus, dtype=np.int64)
        index = len(self.classes)
        self.classes.append(RankClass(index, name, gpus, self.cluster.place(int(gpus[0]))))
        self._busy.append([0.0] * len(self.streams))
        self.clock.append(1.0)
        self.clock_ceiling.append(1.0)
        self._comm_windows.append([])
        self._comm_until.append(0.0)
        self._host.append(0.0)
        self.host_wait.append(0.0)
        self.class_step.append(0)
        self._mem_now = np.append(self._mem_now, 0.0)
        self.mem_peak = np.append(self.mem_peak, 0.0)
        return index

    def slow_class(self, rank_class: int, ceiling: float) -> None:
        """Hold a class at or below ``ceiling`` of the maximum clock from now on (a straggler)."""
        self.clock_ceiling[rank_class] = min(self.clock_ceiling[rank_class], ceiling)
        self.clock[rank_class] = min(self.clock[rank_class], ceiling)

    def heat_rack(self, rack: int, offset_k: float, source: tuple[str, str] = ("", "")) -> None:
        """Feed one rack of the job coolant ``offset_k`` warmer than the supply (a hot rack); ``source`` is
        the (file, field path) an error about it names."""
        self.rack_supply_offset[rack] = float(offset_k)
        self.rack_supply_source[rack] = source

    def stream(self, name: str) -> int:
        sid = self.streams.get(name)
        if sid is None:
            sid = self.streams[name] = len(self.streams)
            for row in self._busy:
                row.append(0.0)
        return sid

    def group(
        self,
        kind: str,
        layout: GroupLayout,
        member_classes: tuple[int, ...],
        concurrency: float = 1.0,
        rows: np.ndarray | None = None,
        uses_sms: bool = True,
    ) -> CommGroup:
        """A communicator; ``rows`` (GPU ids per group) pins which GPUs its flows use under flow contention;
        ``uses_sms=False`` marks transfers that do not slow the compute beside them (copy engines)."""
        grp = CommGroup(
            kind,
            layout,
            tuple(member_classes),
            key=len(self._groups),
            concurrency=concurrency,
            rows=rows,
            uses_sms=uses_sms,
        )
        self._groups.append(grp)
        return grp

    def gpu_multiplicity(self) -> np.ndarray:
        return np.array([c.multiplicity for c in self.classes], dtype=np.int64)

    # ------------------------------------------------------------------ memory
    def alloc(self, rank_class: int, nbytes: float) -> None:
        self._mem_now[rank_class] += nbytes
        if self._mem_now[rank_class] > self.mem_peak[rank_class]:
            self.mem_peak[rank_class] = self._mem_now[rank_class]

    def free(self, rank_class: int, nbytes: float) -> None:
        self._mem_now[rank_class] -= nbytes

    # ------------------------------------------------------------------ operations
    def compute(
        self,
        rank_class: int,
        flops: float,
        nbytes: float,
        *,
        dtype: str,
        name: str,
        min_dim: float = 0.0,
        kind: str = "gemm",
        stream: str = "compute",
        micro: int = -1,
    ) -> simpy.Event:
        """Run one op of ``flops`` FLOP and ``nbytes`` HBM traffic on a stream; returns its completion event."""
        work = ((flops, nbytes, min_dim, KIND_IDS.get(kind, 0)),)
        return self.compute_fused(rank_class, work, dtype=dtype, name=name, stream=stream, micro=micro)

    def _fused_cost(self, work: tuple, dtype: str, clock: float, name: str, extra: int) -> tuple[Any, ...]:
        """(work, clock, dtype, name, time s, template id, extra kernels) of a fused compute op: the memo entry.

        ``extra`` kernels beyond one per op add ``kernel_overhead`` each, time in which the tensor cores and
        HBM idle: the row's utilisations are diluted to match, so energy counts only the roofline's work.
        Entries are kept per (work, dtype, clock, name, extra), so classes that alternate between clocks (a
        throttled job) pay one dictionary lookup, not a new cost evaluation, when the fast memo misses.
        """
        key = (work, dtype, clock, name, extra)
        entry = self._fused_entries.get(key)
        if entry is None:
            if len(self._fused_entries) > _COST_MEMO_MAX:
                self._fused_entries.clear()
            timing = self.compute_model.time_fused(work, dtype, clock)
            time_s = timing.time_s + extra * self.kernel_overhead_s
            busy = timing.time_s / time_s if time_s > 0 else 0.0
            template = (
                KIND_COMPUTE, 0, 0, self.recorder.name_id(name), sum(map(_FLOPS, work)),
                sum(map(_BYTES, work)), timing.u_tensor * busy, timing.u_hbm * busy, 0.0, 0.0,
            )  # fmt: skip
            tid = self.recorder.keep_template(template)
            entry = self._fused_entries[key] = (work, clock, dtype, name, time_s, tid, extra)
        return entry

    def compute_fused(
        self,
        rank_class: int,
        work: tuple[tuple[float, float, float, int], ...],
        *,
        dtype: str,
        name: str,
        stream: str = "compute",
        micro: int = -1,
        launches: int = 0,
        kernels: int = 0,
    ) -> simpy.Event:
        """Run several ops back to back as one event (``work`` = ((flops, nbytes, min_dim, kind_id), ...)).

        ``launches`` kernels are issued by the class's host thread first (``host_kernel_s`` each): the first
        cannot start, nor the last end, before its issue, so a host behind the GPU leaves it waiting
        (host-bound execution). ``kernels`` is how many kernels the GPU runs for it (as many as launches,
        unless a CUDA graph replays them in one); the roofline charges ``accelerator.kernel_overhead`` once
        per op, the kernels beyond one per op pay it here (idle tensor cores and HBM in the row's utilisation).

        The engine's hottest path: costs are memoised per (work, dtype, clock, name), rows are appended to
        the recorder as (varying part, template id) and stream state lives in plain lists, which keeps the
        per-event overhead close to plain simpy's.
        """
        # Memo keyed by the work tuple's identity (callers reuse their program tuples; the memo entry holds
        # this very tuple, which keeps it alive so its id stays unique), holding the cost at the latest
        # (dtype, clock, name) it ran with.
        clock = self.clock[rank_class]
        extra = kernels - len(work) if kernels > len(work) else 0
        memo = self._cost_memo.get(id(work))
        if memo is not None:
            m_work, m_clock, m_dtype, m_name, duration, tid, m_extra = memo
        if (
            memo is None
            or m_work is not work
            or m_clock != clock
            or m_dtype != dtype
            or m_name != name
            or m_extra != extra
        ):
            if len(self._cost_memo) > _COST_MEMO_MAX:  # a caller building fresh tuples every call
                self._cost_memo.clear()
            memo = self._fused_cost(work, dtype, clock, name, extra)
            if memo[0] is not work:  # an equal tuple came first: hold this one, or the next call misses
                memo = (work, *memo[1:])
            self._cost_memo[id(work)] = memo
            duration, tid = memo[4], memo[5]
        if stream == "compute":
            sid = 0
        else:
            sid = self.streams.get(stream)
            if sid is None:
                sid = self.stream(stream)
        busy = self._busy[rank_class]
        env = self.env
        now = env._now  # simpy's `now` property without the call (hot path; simpy pinned <5 for it)
        free = busy[sid]
        start = free if free > now else now
        if self._comm_until[rank_class] > start and self.overlap_slowdown:
            duration = self._slowed(rank_class, start, duration)
        end = start + duration
        if launches and self.host_kernel_s:
            host = self._host[rank_class]
            issued = host + launches * self.host_kernel_s
            self._host[rank_class] = issued
            # The first kernel starts once issued, the last (an average one) ends after its issue: when either
            # bound is later, the GPU waits for launches; the row keeps the busy time, the wait before it.
            # ``duration`` includes every kernel's overhead: a graph's kernels share its one launch.
            late = host + self.host_kernel_s + duration
            tail = issued + duration / launches
            if tail > late:
                late = tail
            if late > end:
                self.host_wait[rank_class] += late - end
                end = late
                start = end - duration
        busy[sid] = end
        buf = self._open_buf
        buf += pack_open_row(rank_class, sid, self.class_step[rank_class], micro, start, end, tid)
        if len(buf) >= self._block_bytes:
            self.recorder.emit()
        # simpy's Timeout(env, delay), inlined: its __init__ and env.schedule are two Python frames per op,
        # a fifth of the engine's own cost per event. Same attributes, same queue entry (time computed as
        # simpy does, now + delay), so the event loop cannot tell the difference (simpy pinned < 5).
        delay = end - now
        ev = _new_timeout(Timeout)
        ev.env = env
        ev.callbacks = []
        ev._value = None
        ev._delay = delay
        ev._ok = True
        heappush(env._queue, (now + delay, NORMAL, next(env._eid), ev))
        return ev

    def host_issue(self, rank_class: int, launches: int) -> None:
        """The host thread issues ``launches`` kernels that the GPU does not wait for here (collectives)."""
        self._host[rank_class] += launches * self.host_kernel_s

    def host_work(self, rank_class: int, seconds: float, since: float | None = None) -> simpy.Event:
        """The host thread works ``seconds`` on its own (no kernel issued meanwhile): an event when it is done.
        Called right after a host_sync, the GPU idles for it; that idle time counts as waiting for the host.
        ``since``: the earliest the work could begin, when the host did it while the GPU ran earlier work
        (a serving engine preparing the next iteration); by default now."""
        now = self.env._now
        done = max(self._host[rank_class], now if since is None else since) + seconds
        self._host[rank_class] = done
        self.host_wait[rank_class] += max(0.0, done - max(now, self._busy[rank_class][0]))
        return self.env.timeout(max(0.0, done - now))

    def host_sync(self, rank_class: int) -> None:
        """The host thread waits for the GPU work issued so far (a device-to-host copy, ``.item()``)."""
        now = self.env._now
        if self._host[rank_class] < now:
            self._host[rank_class] = now

    def _slowed(self, rank_class: int, start: float, duration: float) -> float:
        """How long ``duration`` s of compute from ``start`` takes beside the class's communication: 1 + k
        times slower inside the union of its intervals, full speed outside them."""
        k1 = 1.0 + self.overlap_slowdown
        t, work = start, duration
        for a, b in _union(self._comm_windows[rank_class]):
            if b <= t:
                continue
            if a > t:  # full speed until the interval opens
                if work <= a - t:
                    break
                work -= a - t
                t = a
            inside = (b - t) / k1  # work the slowed interval can take
            if work <= inside:
                return t + work * k1 - start
            work -= inside
            t = b
        return t + work - start

    def _note_comm(self, rank_class: int, start: float, end: float) -> tuple[float, float]:
        """Remember a communication kernel's interval for the compute it overlaps; returns the entry."""
        now = self.env._now
        entry = (start, end)
        windows = [w for w in self._comm_windows[rank_class] if w[1] > now]  # compute never starts before now
        windows.append(entry)
        self._comm_windows[rank_class] = windows
        self._comm_until[rank_class] = max(self._comm_until[rank_class], end)
        return entry

    def _forget_comm(self, rank_class: int, entry: tuple[float, float]) -> None:
        """Drop an interval noted earlier (a flow collective's estimate, once its real end is known)."""
        windows = self._comm_windows[rank_class]
        for i, w in enumerate(windows):
            if w is entry:
                del windows[i]
                break
        self._comm_until[rank_class] = max((w[1] for w in windows), default=0.0)

    def collective(
        self,
        rank_class: int,
        group: CommGroup,
        op: str,
        nbytes: float,
        *,
        name: str,
        stream: str | None = None,
        micro: int = -1,
        algo: str = "auto",
        repeat: int = 1,
    ) -> simpy.Event:
        """Issue a collective on ``group``; it starts once every member class has issued it.

        ``repeat`` runs that many identical calls back to back as one event (e.g. the two TP all-reduces
        of every layer of a serving iteration): ``repeat`` x the time of one, ``repeat`` x the bytes.

        Members are matched by their n-th call on (group, micro-batch), numbered when issued (in program
        order, even if the stream defers the arrival): a forward and another micro-batch's backward running
        together, or a deferred op, cannot pair with a different op of another member.
        """
        sid = self.stream(stream or group.kind)
        key = None
        if len(group.member_classes) > 1:
            counter = (group.key, rank_class, micro)
            call = self._group_calls.get(counter, 0)
            self._group_calls[counter] = call + 1
            key = (group.key, micro, call)
        return self._arrive(rank_class, group, op, nbytes, name, sid, micro, algo, key, repeat)

    def _arrive(
        self,
        rank_class: int,
        group: CommGroup,
        op: str,
        nbytes: float,
        name: str,
        sid: int,
        micro: int,
        algo: str,
        key: tuple[Any, ...] | None,
        repeat: int = 1,
    ) -> simpy.Event:
        """One member reaches its matched call: launch when it is the last (or the only) one."""
        if self._busy[rank_class][sid] == _PENDING:
            # The stream still runs a flow-level collective of unknown end: arrive after it.
            return self._after(
                self._tail[(rank_class, sid)],
                lambda: self._arrive(rank_class, group, op, nbytes, name, sid, micro, algo, key, repeat),
            )
        now = self.env.now
        ready = max(now, self._busy[rank_class][sid])
        if key is None:
            return self._launch(group, op, nbytes, name, sid, micro, algo, ready, (rank_class,), repeat)
        rv = self._rendezvous.get(key)
        if rv is None:
            rv = self._rendezvous[key] = _Rendezvous(done=self.env.event(), what=(op, name))
        elif rv.what != (op, name):
            raise RuntimeError(
                f"collective mismatch on group {group.key}, micro-batch {micro}: {rv.what} vs {(op, name)}"
            )  # the members issue different sequences: a workload bug, never silently paired
        rv.arrived += 1
        rv.ready_at = max(rv.ready_at, ready)
        rv.classes.append(rank_class)
        # Reserve the stream until the collective is known to end (updated when the last member arrives).
        self._busy[rank_class][sid] = max(self._busy[rank_class][sid], ready)
        if rv.arrived == len(group.member_classes):
            del self._rendezvous[key]
            finished = self._launch(
                group, op, nbytes, name, sid, micro, algo, rv.ready_at, tuple(rv.classes), repeat
            )
            done = rv.done
            finished.callbacks.append(lambda _ev: done.succeed())
        return rv.done

    def _after(self, first: simpy.Event, then: Callable[[], simpy.Event]) -> simpy.Event:
        """Event of ``then()`` issued once ``first`` has fired (stream ordering behind a pending op)."""

        def chain() -> Generator[simpy.Event, Any, None]:
            yield first
            yield then()

        return self.env.process(chain())

    def _launch(
        self,
        group: CommGroup,
        op: str,
        nbytes: float,
        name: str,
        sid: int,
        micro: int,
        algo: str,
        start: float,
        classes: tuple[int, ...],
        repeat: int = 1,
    ) -> simpy.Event:
        """Start a collective whose members are all ready at ``start``; the event fires when it ends."""
        if self.fabric is not None and group.uses_scale_out:
            rows = self._group_rows(group, classes)
            if rows is not None:
                return self._run_collective_flow(
                    group, op, nbytes, name, sid, micro, algo, start, classes, rows, repeat
                )
        end = self._run_collective(group, op, nbytes, name, sid, micro, algo, start, classes, repeat)
        return self.env.timeout(end - self.env.now)

    def _group_rows(self, group: CommGroup, classes: tuple[int, ...]) -> np.ndarray | None:
        """GPUs of every group this (class-level) collective stands for, as rows; None when unknown."""
        key = (group.key, classes)
        if key in self._rows_memo:
            return self._rows_memo[key]
        rows = group.rows
        if rows is None and self.dims is not None and group.kind in ("tp", "cp", "ep", "dp", "pp"):
            all_rows = self.dims.all_groups(group.kind)
            if all_rows.shape[1] == group.layout.size:
                gpus = np.concatenate([self.classes[c].gpus for c in classes])
                rows = all_rows[np.isin(all_rows[:, 0], gpus)]
        self._rows_memo[key] = rows
        return rows

    def _run_collective_flow(
        self,
        group: CommGroup,
        op: str,
        nbytes: float,
        name: str,
        sid: int,
        micro: int,
        algo: str,
        start: float,
        classes: tuple[int, ...],
        rows: np.ndarray,
        repeat: int = 1,
    ) -> simpy.Event:
        """A collective whose scale-out phase runs as max-min fair flows on the shared fabric (``repeat``
        calls move ``repeat`` x the bytes and pay ``repeat`` x the fixed part)."""
        assert self.fabric is not None
        timing = self.comm_model.time(op, nbytes, group.layout, algo=algo, concurrency=_NO_CONTENTION)
        one = self.comm_model.scale_out_bytes_per_gpu(op, nbytes, group.layout, timing.algorithm)
        fixed = repeat * max(0.0, timing.time_s - one / self.fabric.links.nic_Bps)
        per_gpu = repeat * one
        a2a = op in ("alltoall", "alltoallv")  # every domain to every other; rings to the next domain
        pairs = self._pairs_memo.get((group.key, a2a))
        if pairs is None:
            links = self.fabric.links
            parts = [(links.rail_all_pairs if a2a else links.rail_pairs)(row) for row in rows]
            pairs = self._pairs_memo[(group.key, a2a)] = (
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
            )
        if a2a and len(pairs[0]):  # a member's bytes split evenly over the other domains
            domains = len(np.unique(rows[0] // self.cluster.domain_size))
            per_gpu /= max(1, domains - 1)
        done = self.env.event()
        for c in classes:
            self._busy[c][sid] = _PENDING
            self._tail[(c, sid)] = done
        provisional: list[tuple[int, tuple[float, float]]] = []
        if group.uses_sms and self.overlap_slowdown:
            # Compute issued while the flows run sees the analytical estimate of the end; the real interval
            # replaces it when the flows finish.
            estimate = self.comm_model.time(
                op, nbytes, group.layout, algo=algo, concurrency=group.concurrency
            )
            provisional = [(c, self._note_comm(c, start, start + repeat * estimate.time_s)) for c in classes]

        def run() -> Generator[simpy.Event, Any, None]:
            yield self.env.timeout(start + fixed - self.env.now)
            yield self.fabric.transfer(pairs[0], pairs[1], per_gpu)
            end = self.env.now
            for c, entry in provisional:
                self._forget_comm(c, entry)
            self._record_collective(
                group, op, repeat * nbytes, name, sid, micro, start, end, classes, timing.algorithm
            )
            for c in classes:
                if self._tail.get((c, sid)) is done:
                    self._busy[c][sid] = end
                    del self._tail[(c, sid)]
            done.succeed()

        self.env.process(run())
        return done

    def _run_collective(
        self,
        group: CommGroup,
        op: str,
        nbytes: float,
        name: str,
        sid: int,
        micro: int,
        algo: str,
        start: float,
        classes: tuple[int, ...],
        repeat: int = 1,
    ) -> float:
        timing = self.comm_model.time(op, nbytes, group.layout, algo=algo, concurrency=group.concurrency)
        end = start + repeat * timing.time_s
        self._record_collective(
            group, op, repeat * nbytes, name, sid, micro, start, end, classes, timing.algorithm
        )
        return end

    def _record_collective(
        self,
        group: CommGroup,
        op: str,
        nbytes: float,
        name: str,
        sid: int,
        micro: int,
        start: float,
        end: float,
        classes: tuple[int, ...],
        algorithm: str,
    ) -> None:
        u_up = 1.0 if group.layout.ranks_per_domain > 1 else 0.0
        u_out = 1.0 if group.uses_scale_out else 0.0
        gid = GROUP_IDS.get(group.kind, GROUP_IDS["other"])
        template = (
            KIND_COLLECTIVE,
            gid,
            OP_IDS[op],
            self.recorder.name_id(name),
            0.0,
            nbytes,
            0.0,
            0.1,
            u_up,
            u_out,
        )
        for c in classes:
            self._busy[c][sid] = end
            if group.uses_sms and self.overlap_slowdown:
                self._note_comm(c, start, end)
            self.recorder.record_op(c, sid, self.class_step[c], micro, start, end, template)
        self.comm_log[algorithm] = self.comm_log.get(algorithm, 0) + 1

    def send(
        self,
        src_class: int,
        dst_class: int,
        nbytes: float,
        *,
        tag: Any,
        layout: GroupLayout,
        name: str,
        group_kind: str = "pp",
        micro: int = -1,
    ) -> simpy.Event:
        """Point-to-point send; the matching ``recv(tag)`` fires when the data has arrived."""
        sid_send = self.stream(f"{group_kind}_send")
        sid_recv = self.stream(f"{group_kind}_recv")
        now = self.env.now
        start = max(now, self._busy[src_class][sid_send], self._busy[dst_class][sid_recv])
        timing = self.comm_model.time("sendrecv", nbytes, layout)
        end = start + timing.time_s
        self._busy[src_class][sid_send] = end
        self._busy[dst_class][sid_recv] = end
        if self.overlap_slowdown:
            self._note_comm(src_class, start, end)
            self._note_comm(dst_class, start, end)
        u_up = 1.0 if layout.top_tier == TIER_SCALE_UP else 0.0
        u_out = 1.0 - u_up
        nid = self.recorder.name_id(name)
        gid = GROUP_IDS.get(group_kind, GROUP_IDS["other"])
        oid = OP_IDS["sendrecv"]
        step = self.class_step[src_class]
        send = (KIND_SEND, gid, oid, nid, 0.0, nbytes, 0.0, 0.05, u_up, u_out)
        self.recorder.record_op(src_class, sid_send, step, micro, start, end, send)
        recv = (KIND_RECV, gid, oid, nid, 0.0, nbytes, 0.0, 0.05, u_up, u_out)
        self.recorder.record_op(dst_class, sid_recv, step, micro, start, end, recv)
        arrived = self._mailbox_event(tag)
        if arrived.triggered:
            raise RuntimeError(f"p2p tag {tag!r} sent twice while in flight (tags must be unique per step)")
        self.env.timeout(end - now).callbacks.append(lambda _ev: arrived.succeed())
        return self.env.timeout(end - now)

    def recv(self, tag: Any) -> simpy.Event:
        """Event that fires when the send with this tag has delivered its data.

        Tags must be unique while in flight (include the step); the mailbox forgets a tag once delivered.
        """
        ev = self._mailbox_event(tag)
        if ev.processed:
            self._mailbox.pop(tag, None)
        else:
            ev.callbacks.append(lambda _ev: self._mailbox.pop(tag, None))
        return ev

    def _mailbox_event(self, tag: Any) -> simpy.Event:
        ev = self._mailbox.get(tag)
        if ev is None:
            ev = self._mailbox[tag] = self.env.event()
        return ev

    def has_unrecorded_ops(self) -> bool:
        """Whether a collective runs whose activity row is written only when its fabric flows finish."""
        return bool(self._tail)

    def stream_idle_at(self, rank_class: int, stream: str) -> float:
        """When the stream will have finished everything issued so far."""
        sid = self.streams.get(stream)
        return self._busy[rank_class][sid] if sid is not None else self.env.now

    def wait_streams(self, rank_class: int, streams: tuple[str, ...] | None = None) -> simpy.Event:
        """Event firing when all (or the given) streams of a class have drained (cudaDeviceSynchronize)."""
        names = streams if streams is not None else tuple(self.streams)
        t = max([self.env.now] + [self.stream_idle_at(rank_class, s) for s in names])
        return self.env.timeout(t - self.env.now)

    def run(self, until: float | None = None) -> None:
        self.env.run(until=until)
        self.recorder.flush()


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of intervals as sorted, disjoint (start, end) pairs (touching ones stay apart: harmless)."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a < out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out
