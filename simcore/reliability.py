"""Job-level replay: a multi-day training job with node failures, checkpoints and restarts.

The step-level run gives the step time; this module replays ``steps`` of them on a second, coarser
simpy clock where the events are checkpoints, failures and recoveries (DESIGN.md, "Two time scales"):

- Each of the job's nodes fails as a renewal process with Weibull times between failures (shape ``k``;
  ``k = 1`` is Poisson) whose mean is ``1000 days / node_failures_per_1000_node_days``; the fleet has been
  running, so each node's first failure is its equilibrium residual life ((t/λ)^k ~ Gamma(1/k)); a
  replaced node starts new. Any node failure interrupts the (synchronous) job.
- The job computes ``checkpoint_every`` steps, then writes a checkpoint (training paused for ``δ`` =
  checkpoint bytes / (per-GPU write bandwidth x GPUs)); a failure loses everything since the last
  completed checkpoint.
- Recovery: detection, then a replacement node, then ``restart_time`` (reschedule, reload, warm-up); a
  failure during recovery starts it over. Every failure orders a new node once it is detected, ready
  ``replace_time`` later; the job takes the first node available: a ready hot spare, else whichever comes
  first of a spare in preparation and its own new node (``hot_spares`` stay ``hot_spares``: a used one is
  replaced).
- A job whose recoveries outlast its failures (it would practically never finish) stops with an error
  once its wall time passes ``MAX_STRETCH`` x the failure-free time; one that clearly cannot finish (a
  recovery or a checkpoint interval many times its mean time between failures), or whose checkpoints and
  failures exceed ``MAX_EVENTS``, is refused before the replay starts.
- ``checkpoint_every = 0`` picks Daly's optimum interval (modeling-notes 4.2, Daly 2006 eq. 37):
  ``τ = sqrt(2δM)·[1 + sqrt(δ/2M)/3 + (δ/2M)/9] − δ`` for ``δ < 2M``, else ``M``, with ``M`` the job's
  mean time between failures, rounded to whole steps.

Where the weather reaches the GPUs (a dry cooler's supply follows the outside temperature), the plan holds
the step time over the day (``day_step_s``) and each part of the day runs at its own (``StepClock``);
``step_time_s`` is then the day's mean step.

Goodput is useful training time (steps x step time) over wall time. The first-order expectation
``1 − δ/τ − (τ/2 + R)/M`` (R: detection + restart, plus ``replace_time`` without hot spares; with them it
assumes a spare is always ready) is reported beside it for comparison.

The job's energy prices its wall time: computing (useful and re-done steps) at the step-level run's facility
power, checkpoint writes and recoveries at the facility power of the job's racks idling (GPUs at idle power,
static load and fabric share, same cooling chain). Hot spares idling are not the job's.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from simcore.errors import RacksimError

DAY_S = 86_400.0
MAX_STRETCH = 1000.0  # wall time beyond this many failure-free job times: the job does not finish
MAX_FAILURES = 2_000_000  # more failures than this: the job does not finish either
# Checkpoints plus expected failures the replay will simulate (~5-25 us of simpy each: under a minute); a
# job past it (a typo'd steps, a checkpoint every step of a years-long job) is refused before it starts.
MAX_EVENTS = 2_000_000
# The job's energy keys of summary.json (JobResult.energy), null without a power model.
ENERGY_KEYS = ("job_energy_j", "job_energy_per_token_j", "job_energy_lost_j", "job_idle_facility_power_w")


@dataclass(frozen=True)
class JobPlan:
    """Everything the replay needs, in SI units."""

    steps: int
    step_time_s: float
    checkpoint_s: float  # δ: training paused per checkpoint
    checkpoint_every: int  # steps between checkpoints; 0 = Daly's optimum
    nodes: int
    node_mtbf_s: float  # mean time between failures of one node (inf: never fails)
    weibull_shape: float = 1.0
    detect_s: float = 300.0
    restart_s: float = 900.0
    replace_s: float = 0.0  # wait for a replacement node when no hot spare is ready
    hot_spares: int = 0
    seed: int = 0
    # The step time over the day where the weather reaches the GPUs (a dry cooler's supply follows the
    # outside temperature): one value per equal share of the day from midnight, each centred on the time of
    # day it was simulated at; () = ``step_time_s`` all day. ``step_time_s`` is then the day's mean step
    # (the day over the steps it holds).
    day_step_s: tuple[float, ...] = ()
    start_time_of_day_s: float = 15 * 3600.0  # when the job starts (as the step-level run does)

    @property
    def job_mtbf_s(self) -> float:
        """M: mean time between job-interrupting failures (any of ``nodes``)."""
        return self.node_mtbf_s / self.nodes if math.isfinite(self.node_mtbf_s) else math.inf


def day_mean_step_s(day_step_s: tuple[float, ...]) -> float:
    """The mean step of a day whose equal shares run at ``day_step_s``: the day over the steps it holds."""
    return len(day_step_s) / sum(1.0 / s for s in day_step_s)


class StepClock:
    """How long ``n`` steps take from a given time: the plan's step time, or the day's where it varies.

    The day is ``len(day_step_s)`` equal bins, bin ``i`` centred on ``i * DAY_S / len`` from midnight (the
    times of day the step was simulated at), each at its own step time; steps run back to back across bin
    edges, whole days at the day's rate."""

    def __init__(self, plan: JobPlan) -> None:
        self.step_s = plan.step_time_s
        self.start = plan.start_time_of_day_s
        self.bins = np.asarray(plan.day_step_s, dtype=np.float64)
        if len(self.bins):
            self.width = DAY_S / len(self.bins)
            self.steps_per_day = float(np.sum(self.width / self.bins))

    def duration(self, now_s: float, steps: float) -> float:
        """Wall time of ``steps`` steps started ``now_s`` after the job's start."""
        if not len(self.bins):
            return steps * self.step_s
        whole = math.floor(steps / self.steps_per_day)
        left = steps - whole * self.steps_per_day
        spent = whole * DAY_S
        # bin i covers [(i - 1/2) w, (i + 1/2) w) of the day: shift by half a bin to index it
        t = (self.start + now_s + spent + 0.5 * self.width) % DAY_S
        n = len(self.bins)
        i = int(t // self.width) % n
        edge = (i + 1) * self.width - t  # time left in the current bin
        while left > 0.0:
            fit = edge / self.bins[i]
            if left <= fit:
                return spent + left * self.bins[i]
            left -= fit
            spent += edge
            i = (i + 1) % n
            edge = self.width
        return spent


def daly_interval_s(checkpoint_s: float, mtbf_s: float) -> float:
    """Daly's (2006, eq. 37) optimum compute time between checkpoints."""
    if not math.isfinite(mtbf_s):
        return math.inf
    if checkpoint_s >= 2.0 * mtbf_s:
        return mtbf_s
    x = checkpoint_s / (2.0 * mtbf_s)
    return math.sqrt(2.0 * checkpoint_s * mtbf_s) * (1.0 + math.sqrt(x) / 3.0 + x / 9.0) - checkpoint_s


def first_order_goodput(interval_s: float, checkpoint_s: float, mtbf_s: float, recovery_s: float) -> float:
    """``1 − δ/τ − (τ/2 + R)/M``: the expected share of wall time doing new work (small δ, τ, R next to M)."""
    waste = checkpoint_s / interval_s + (
        (interval_s / 2.0 + recovery_s) / mtbf_s if math.isfinite(mtbf_s) else 0.0
    )
    return max(0.0, 1.0 - waste)


@dataclass
class JobResult:
    """What the replay measured (every time in seconds)."""

    plan: JobPlan
    checkpoint_every: int
    wall_s: float = 0.0
    failures: int = 0
    checkpoints: int = 0
    lost_work_s: float = 0.0  # computing and checkpointing that a failure threw away
    down_s: float = 0.0  # detection + waiting for a node + restart
    checkpoint_total_s: float = 0.0  # completed checkpoints
    computed_s: float = 0.0  # what the committed steps took (their times of day's steps)

    @property
    def useful_s(self) -> float:
        """The committed steps' computing time: steps x step time, or where the step varies over the day,
        what they took at the times of day they ran (the day's mean step holds only over whole days)."""
        return self.computed_s if self.plan.day_step_s else self.plan.steps * self.plan.step_time_s

    @property
    def goodput(self) -> float:
        """Useful over wall time; at most 1 (a failure-free job without checkpoints sums its segments to
        a wall time a rounding below steps x step time)."""
        return min(1.0, self.useful_s / self.wall_s) if self.wall_s > 0 else 1.0

    def summary(self) -> dict[str, Any]:
        """The ``job_*`` keys of summary.json (plus ``goodput``)."""
        p = self.plan
        interval = self.checkpoint_every * p.step_time_s
        day = p.day_step_s or (p.step_time_s,)
        return {
            "goodput": self.goodput,
            "job_steps": p.steps,
            "job_step_time_min_s": min(day),
            "job_step_time_max_s": max(day),
            "job_wall_s": self.wall_s,
            "job_days": self.wall_s / DAY_S,
            "job_failures": self.failures,
            "job_checkpoints": self.checkpoints,
            "job_checkpoint_every_steps": self.checkpoint_every,
            "job_checkpoint_s": p.checkpoint_s,
            "job_checkpoint_total_s": self.checkpoint_total_s,
            "job_lost_work_s": self.lost_work_s,
            "job_down_s": self.down_s,
            "job_mtbf_s": p.job_mtbf_s if math.isfinite(p.job_mtbf_s) else None,  # None: never fails
            "job_goodput_first_order": first_order_goodput(
                interval,
                p.checkpoint_s,
                p.job_mtbf_s,
                p.detect_s + p.restart_s + (p.replace_s if p.hot_spares == 0 else 0.0),
            ),
        }

    def energy(
        self, step_facility_w: float | None, idle_facility_w: float | None, tokens_per_step: float
    ) -> dict[str, Any]:
        """The job's facility energy: computing (useful and re-done steps, ``useful_s + lost_work_s``) at the
        step-level run's facility power, checkpoint writes and recoveries (``checkpoint_total_s + down_s``)
        at that of the job's racks idling; None without a power model. The wall time is exactly those four
        (a checkpoint write a failure cuts short is counted with the lost work, at step power)."""
        if step_facility_w is None or idle_facility_w is None:
            return dict.fromkeys(ENERGY_KEYS)
        paused_s = self.checkpoint_total_s + self.down_s
        lost_j = step_facility_w * self.lost_work_s + idle_facility_w * paused_s
        total_j = step_facility_w * self.useful_s + lost_j
        tokens = self.plan.steps * tokens_per_step
        return {
            "job_energy_j": total_j,
            "job_energy_per_token_j": total_j / tokens if tokens > 0 else None,
            "job_energy_lost_j": lost_j,
            "job_idle_facility_power_w": idle_facility_w,
        }


class _Failures:
    """Node failure times: one Weibull renewal process per node, merged in a heap."""

    def __init__(self, plan: JobPlan, rng: np.random.Generator) -> None:
        self.rng = rng
        self.shape = plan.weibull_shape
        self.scale = plan.node_mtbf_s / math.gamma(1.0 + 1.0 / plan.weibull_shape)
        first = self._first(plan.nodes)
        self.heap = [(float(t), node) for node, t in enumerate(first)]
        heapq.heapify(self.heap)

    def _draw(self, n: int) -> np.ndarray:
        return self.scale * self.rng.weibull(self.shape, n)

    def _first(self, n: int) -> np.ndarray:
        """Each node's first failure: the residual life of a fleet that has been running (the renewal
        process in equilibrium), not of a brand-new node. Its CDF is (1/mean)·∫S = P(1/k, (t/λ)^k), the
        regularised incomplete gamma, so (t/λ)^k ~ Gamma(1/k): t = λ·G^(1/k). For k = 1 that is the same
        exponential as a new node's (memoryless), drawn as before. With new nodes at t = 0, a shape of 0.7
        gave 2.4x the configured failures over an 18-day job on 2,048 nodes, and 1.5 a quarter of them."""
        if self.shape == 1.0:
            return self._draw(n)
        return self.scale * self.rng.gamma(1.0 / self.shape, 1.0, n) ** (1.0 / self.shape)

    def pop(self) -> float:
        """Time of the next failure; the failed node is replaced by a new one (its next failure drawn)."""
        t, node = heapq.heappop(self.heap)
        heapq.heappush(self.heap, (t + float(self._draw(1)[0]), node))
        return t


def checkpoint_every(plan: JobPlan) -> int:
    """Steps between checkpoints: the plan's, or Daly's optimum rounded to whole steps; never more than the
    job's steps (a job shorter than its interval checkpoints once, at its end)."""
    if plan.checkpoint_every > 0:
        return min(plan.steps, plan.checkpoint_every)
    tau = daly_interval_s(plan.checkpoint_s, plan.job_mtbf_s)
    if not math.isfinite(tau):
        return plan.steps
    return int(min(plan.steps, max(1, round(tau / plan.step_time_s))))


def min_replay_events(plan: JobPlan) -> float:
    """A lower bound of the checkpoints and failures the replay meets, for any step time of at least
    ``plan.step_time_s``: a job that exceeds ``MAX_EVENTS`` with it is refused before its step is simulated.

    A longer step never checkpoints less often (Daly's interval in steps shrinks), and a segment fails at least
    its length over the MTBF times (e^x - 1 >= x), so the failures are at least the job's work over the MTBF."""
    segments = math.ceil(plan.steps / checkpoint_every(plan))
    failures = plan.steps * plan.step_time_s / plan.job_mtbf_s if math.isfinite(plan.job_mtbf_s) else 0.0
    return segments + failures


def replay_job(plan: JobPlan) -> JobResult:
    """Run the job on a simpy clock until its last step is checkpointed."""
    if plan.steps < 1 or plan.step_time_s <= 0:
        raise ValueError("a job needs steps >= 1 and a positive step time")
    every = checkpoint_every(plan)
    _check_replayable(plan, every)
    result = JobResult(plan, every)
    env = simpy.Environment()
    rng = np.random.default_rng(plan.seed)
    spares = [0.0] * plan.hot_spares  # when each hot spare is (or will be) ready
    done = env.event()
    clock = StepClock(plan)

    def resume_time(now: float) -> float:
        """When the job can run again after a failure at ``now``: detect it, then get a node (a ready hot
        spare, else the replacement ordered once the failure is known), then restart."""
        detected = now + plan.detect_s
        ordered = detected + plan.replace_s  # the failed node's replacement
        if spares and min(spares) < ordered:
            slot = spares.index(min(spares))
            ready = max(detected, spares[slot])
            spares[slot] = ordered  # the new node refills the pool
        else:
            ready = ordered
        return ready + plan.restart_s

    def hold(duration: float) -> Generator[simpy.Event, Any, float | None]:
        """Wait ``duration``; the resume time of a failure that cut it short, else None."""
        try:
            yield env.timeout(duration)
        except simpy.Interrupt as stop:
            return float(stop.cause)
        return None

    def trainer() -> Generator[simpy.Event, Any, None]:
        committed = 0
        while committed < plan.steps:
            seg = min(every, plan.steps - committed)
            t0 = env.now
            computing = clock.duration(env.now, seg)
            resume = yield from hold(computing + plan.checkpoint_s)
            if resume is None:
                committed += seg
                result.computed_s += computing
                result.checkpoints += 1
                result.checkpoint_total_s += plan.checkpoint_s
                continue
            result.lost_work_s += env.now - t0
            while resume is not None:  # recover; a failure meanwhile starts the recovery over
                r0 = env.now
                resume = yield from hold(resume - env.now)
                result.down_s += env.now - r0
        result.wall_s = env.now
        done.succeed()

    train = env.process(trainer())

    def failures() -> Generator[simpy.Event, Any, None]:
        if not math.isfinite(plan.node_mtbf_s):
            return
        source = _Failures(plan, rng)
        while True:
            t = source.pop()
            yield env.timeout(max(0.0, t - env.now))  # the run stops at `done`: never outlives the job
            if done.triggered:
                return
            result.failures += 1
            if result.failures > MAX_FAILURES:
                return  # the wall-time limit reports it
            train.interrupt(resume_time(env.now))

    env.process(failures())
    limit = MAX_STRETCH * plan.steps * (plan.step_time_s + plan.checkpoint_s / every)
    env.run(until=env.timeout(limit) | done)
    if not done.triggered or result.failures > MAX_FAILURES:
        raise RacksimError(
            f"the job does not finish: after {limit / DAY_S:,.0f} days ({result.failures:,} failures) it is still "
            f"recovering; {_too_long_recovery(plan)}"
        )
    return result


def _too_long_recovery(plan: JobPlan) -> str:
    return (
        f"a recovery ({(plan.detect_s + plan.replace_s + plan.restart_s) / 3600:.2g} h) is too long next to the "
        f"job's mean time between failures ({plan.job_mtbf_s / 3600:.2g} h): add hot spares, shorten "
        "reliability.replace_time / restart_time, or use fewer nodes"
    )


def _check_replayable(plan: JobPlan, every: int) -> None:
    """Refuse, before simulating, a job the replay cannot finish in reasonable time: one whose recoveries
    almost never complete (a recovery of R seconds survives with probability e^(-R/M), so it takes ~e^(R/M)
    tries), or one with more checkpoints and failures than ``MAX_EVENTS``."""
    mtbf = plan.job_mtbf_s
    # The shortest recovery: a ready hot spare skips the wait for a replacement node.
    recovery = plan.detect_s + plan.restart_s + (0.0 if plan.hot_spares else plan.replace_s)
    if math.isfinite(mtbf) and recovery / mtbf > math.log(MAX_FAILURES):
        raise RacksimError(
            f"the job does not finish: each recovery needs ~e^{recovery / mtbf:,.3g} tries before one outlasts "
            f"the next failure; {_too_long_recovery(plan)}"
        )
    # One interval: the work between two checkpoints and the write that ends it.
    segment = min(every, plan.steps) * plan.step_time_s + plan.checkpoint_s
    if math.isfinite(mtbf) and segment / mtbf > math.log(MAX_FAILURES):
        raise RacksimError(
            f"the job does not finish: {min(every, plan.steps):,} steps and a checkpoint "
            f"({segment / 3600:,.3g} h) almost never run between two failures (mean {mtbf / 3600:.2g} h); "
            "checkpoint more often (job.checkpoint_every) or faster (job.checkpoint_bytes, "
            "reliability.checkpoint_bandwidth), or use fewer nodes"
        )
    segments = math.ceil(plan.steps / every)
    work_s = plan.steps * plan.step_time_s + segments * plan.checkpoint_s
    # Expected failures: a segment is redone until it runs failure-free (e^x - 1 failures for x = its length
    # over the MTBF), each recovery until it does (e^(R/M) tries); ~work / MTBF when both are short.
    failures = (
        segments * math.expm1(segment / mtbf) * math.exp(recovery / mtbf) if math.isfinite(mtbf) else 0.0
    )
    if segments + failures > MAX_EVENTS:
        raise RacksimError(
            f"the job is too long to replay: {plan.steps:,} steps of {plan.step_time_s:.3g} s and {segments:,} "
            f"checkpoints of {plan.checkpoint_s:.3g} s ({work_s / DAY_S:,.3g} days) meet ~{failures:,.0f} failures, "
            f"more than the {MAX_EVENTS:,} events racksim replays; lower job.steps, raise job.checkpoint_every "
            "or shorten the checkpoints (job.checkpoint_bytes, reliability.checkpoint_bandwidth)"
        )
