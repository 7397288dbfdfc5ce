"""From GPU activity to facility megawatts, with power caps and throttling fed back to the engine.

A ``PowerController`` is a simpy process on a control tick. Each tick it takes the activity rows the
engine recorded since the last tick, bins them (``kernels.power.activity_power``), integrates the
two-node RC thermal model exactly (``kernels.thermal.rc_thermal``), and sets each rank class's clock
factor for the next tick: the lower of the thermal-throttle clock and the clock that holds the GPU
at its power cap (the GPU cap, or its share of the rack limit when the rack is over it). Compute-bound
work issued after that runs slower; memory-bound work barely notices.

After the run, ``finalize`` rolls GPU power up to racks (plus CPUs, NICs, switches, fans, other),
through the PSU curve and the distribution loss, then to the facility (pumps, chiller/dry cooler,
fans, other overhead; PUE computed), and applies the profile's mitigations (GPU power smoothing,
rack energy storage) to report the swing with and without them.

Conventions: series are sampled every ``sample_s``; GPU power is per GPU of a class; rack power is per
rack of a rack type (racks with the same mix of classes); facility power covers every rack of the job.
"IT power" is power delivered to the racks (after facility distribution, before the rack PSUs).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from simcore.activity import ActivityRecorder
from simcore.engine import Machine
from simcore.errors import ConfigError, RacksimError
from simcore.kernels import grid, power, thermal
from simcore.profile import Profile, load_temperature_csv, resolve_beside

AIR_DESIGN_RISE_K = 12.0  # inlet-to-exhaust air rise at design load (typical server, ~10-15 K)
SECONDS_PER_DAY = 86400.0
SPLIT_TOLERANCE_K = 0.05  # coolant difference that makes a class's rack types separate thermal units
MAX_IDLE_TICKS = 200  # longest stretch (10 s at 50 ms ticks) an idle machine is stepped over in one tick
# The controller's memory (1 s at 50 ms ticks). A rack's limit stays engaged while its demand has exceeded
# it within this many ticks, and a capped clock is set for the busiest tick among them: a controller that
# lifted the cap (or raised the clock) on the first quiet tick would let the next compute tick run over.
HOLD_TICKS = 20
# What set a GPU's clock in a sample (the `clock_cause` series): the codes, in the order the summary's
# throttle_*_fraction keys list them.
CAUSE_NONE, CAUSE_THERMAL, CAUSE_RACK_LIMIT, CAUSE_POWER_CAP, CAUSE_STRAGGLER = 0, 1, 2, 3, 4


# Memory of the power/thermal series: ~140 bytes per rank class per sample (GPU power, clocks, junction and
# plate temperatures, causes, activity, rack and facility chains; measured on serving runs of 1 and 64
# replicas), and the budget a run's series may take before the sample widens.
SERIES_BYTES_PER_CLASS_SAMPLE = 140
SERIES_BUDGET_BYTES = 0.5e9


@dataclass(frozen=True)
class PowerSettings:
    """Resolution of the power/thermal coupling."""

    sample_s: float = 0.005  # series resolution: resolves the 0.1-20 Hz band (Nyquist 100 Hz)
    tick_samples: int = 10  # control tick = 50 ms: how often clocks are updated
    start_time_of_day_s: float = 15 * 3600.0  # runs start at 15:00, the warm part of the day

    @property
    def tick_s(self) -> float:
        return self.sample_s * self.tick_samples

    def for_span(self, span_s: float, classes: int) -> PowerSettings:
        """Settings whose series of a run lasting at least ``span_s`` (a request stream's arrivals) fit
        ``SERIES_BUDGET_BYTES``: the sample widens by powers of two and the control tick keeps as many
        samples as fit in its 50 ms (at least one: 40 ms at 20 ms samples, then one sample), so a sparse or
        day-long stream is not killed for memory at 5 ms samples."""
        need = span_s / self.sample_s * SERIES_BYTES_PER_CLASS_SAMPLE * max(1, classes)
        if not need > SERIES_BUDGET_BYTES:
            return self
        factor = 2 ** math.ceil(math.log2(need / SERIES_BUDGET_BYTES))
        return dataclasses.replace(
            self,
            sample_s=self.sample_s * factor,
            tick_samples=max(1, int(self.tick_s / (self.sample_s * factor) + 1e-9)),
        )


class PowerController:
    """Per-tick power, thermal and clock control for the rank classes of one Machine."""

    def __init__(
        self, machine: Machine, settings: PowerSettings | None = None, warm_activity: np.ndarray | None = None
    ) -> None:
        self.m = machine
        self.p: Profile = machine.profile
        self.s = settings or PowerSettings()
        acc, cool = self.p.accelerator, self.p.cooling
        n = len(machine.classes)
        self.n = n
        w = acc.power_weights
        self.weights = np.tile(np.array([w.tensor, w.hbm, w.scale_up, w.scale_out]), (n, 1))
        self.idle = power.per_class(acc.idle_power, n)
        self.peak = power.per_class(acc.tdp, n)
        self.kappa = power.per_class(acc.power_exponent, n)
        self.f_min = power.per_class(acc.min_clock / acc.max_clock, n)
        self.gpu_cap = power.per_class(acc.power_cap if acc.power_cap is not None else acc.tdp, n)
        self.cap = self.gpu_cap.copy()
        # A straggler's class never runs above its clock ceiling (workload `stragglers`), whatever the caps
        self.ceiling = np.asarray(machine.clock_ceiling, dtype=np.float64)
        self.r_jc = power.per_class(cool.r_junction_plate, n)
        self.r_cf = power.per_class(cool.r_plate_coolant, n)
        self.c_j = power.per_class(cool.c_junction, n)
        self.c_cp = power.per_class(cool.c_plate, n)
        self.slowdown = power.per_class(acc.slowdown_temp, n)
        self.slope = power.per_class(acc.throttle_slope, n)
        self._rack_mix(machine)
        self.static_rack_w = _static_rack_power(self.p)
        floor_w = self.static_rack_w + machine.cluster.gpus_per_rack * acc.idle_power
        if self.p.rack.psu_rated_power < floor_w:
            raise ConfigError(
                f"the power shelf cannot carry the rack's idle draw ({floor_w / 1e3:.3g} kW)",
                file=self.p.source_file,
                path="rack.psu_rated_power",
                value=f"{self.p.rack.psu_rated_power / 1e3:.3g} kW",
                expected=f">= {floor_w / 1e3:.3g} kW",
            )
        floor_in = self._rack_input_w(floor_w)  # the limit is at the rack's input
        if self.p.rack.power_limit < floor_in:  # no cap can hold it, and the cooling is sized to it
            raise ConfigError(
                f"below the rack's idle draw ({floor_in / 1e3:.3g} kW at its input: "
                f"{machine.cluster.gpus_per_rack} GPUs at {acc.idle_power:.0f} W + "
                f"{self.static_rack_w / 1e3:.3g} kW of CPUs, NICs, switches and fans, and conversion loss)",
                file=self.p.source_file,
                path="rack.power_limit",
                value=f"{self.p.rack.power_limit / 1e3:.3g} kW",
                expected=f">= {floor_in / 1e3:.3g} kW",
            )
        self.it_limit_w = self._it_budget(self.p.rack.power_limit)
        # The job's share of the scale-out fabric (switches and their transceivers, outside the racks):
        # constant power, IT load beside the racks', cooled with it.
        self.fabric_w = self.p.scale_out.fabric_power_per_gpu() * float(machine.gpu_multiplicity().sum())
        csv_name = self.p.cooling.facility.outside_temp_csv
        self._ambient = (
            load_temperature_csv(resolve_beside(csv_name, self.p.source_file), file=self.p.source_file)
            if csv_name
            else None
        )
        # Coolant: rise across a rack at design load (liquid: from flow per kW; air: typical server rise).
        if cool.type == "liquid" and cool.flow_per_kw:
            # flow_per_kw is m^3/s per W: rise = P / (rho * Q * cp) = 1 / (rho * cp * flow_per_W) at any load
            # when flow is sized for the design load; we scale it by the load fraction of the rack limit.
            self.design_rise_k = 1.0 / (
                thermal.WATER_DENSITY_KG_PER_M3 * thermal.WATER_CP_J_PER_KG_K * cool.flow_per_kw
            )
        else:
            self.design_rise_k = AIR_DESIGN_RISE_K
        self._set_units(np.arange(n), self.class_in_type.T.copy())  # thermal units (below): one per class
        # Warm start: a job that has been running sits near the steady state of sustained compute. Its power
        # is held by the GPU's cap, and by its share of the rack limit where the rack (with its idle GPUs and
        # static load) would exceed it, as every tick's is; where that power would still heat the junction
        # past the slowdown temperature, the clock is the thermal throttle's steady state. The engine starts
        # at that clock, so a short run is not charged a full-clock first tick a running job never has.
        # The caps are held for the busiest recent tick, so they start from sustained compute (a_hot); the
        # heat starts from the job's own mean activity when a first pass measured it (warm_activity:
        # settle_thermal_start), since the heatsink averages over a minute or more, else from a_hot.
        a_hot = np.full(n, min(1.0, w.tensor + 0.3 * w.hbm))
        self._demand_hist = np.tile(self._rack_demand(self._full_clock_power(a_hot)), (HOLD_TICKS, 1))
        self._activity_hist = np.tile(a_hot, (HOLD_TICKS, 1))  # [ticks, U]: each unit's mean activity
        self._hist_row = HOLD_TICKS - 1  # the ring buffers' newest row
        self.cap = self._rack_caps(self._demand_hist[-1] > self.it_limit_w)
        f_caps = power.clock_for_power_cap(
            self.cap, self.idle, self.peak, a_hot[:, None], self.kappa, self.f_min
        )
        self.f_cap_start = np.minimum(f_caps[:, 0], self.ceiling)
        self.warm_activity = a_hot if warm_activity is None else np.asarray(warm_activity, dtype=np.float64)
        f_warm, self.tj, self.tcp = self.warm_state(self.warm_activity)
        if np.any(self.tj > acc.shutdown_temp):
            self._refuse_overheat(float(self.tj.max()), int(np.argmax(self.tj)))
        self.f_start, self.tj_start, self.tcp_start = f_warm, self.tj.copy(), self.tcp.copy()
        machine.clock[:] = np.round(f_warm, 6).tolist()
        self.clock_cause = self._causes(  # per class
            np.round(f_warm, 6), f_warm < self.f_cap_start - 1e-12, f_warm >= self.ceiling - 1e-12
        )
        # Thermal units: GPUs of one class that share one environment. Every class starts as one unit (its
        # GPUs run the same ops); a class whose rack types come to differ in coolant temperature or in the
        # rack power cap splits into one unit per rack type, each with its own temperature, cap and clock.
        # tj, tcp and cap are per unit; the engine runs a class at its slowest unit's clock (in a synchronous
        # job the others wait for it at the next collective, which the unit's power accounts for).
        self.unit_clock = np.round(f_warm, 6)
        self._split_hot_racks()
        self.t_prev = 0.0
        self._carry: tuple[np.ndarray, ...] = _empty_intervals()
        self._queue: list[np.ndarray] = []
        self._consumed_open = 0
        self._rows_taken = 0  # rows recorded when the last tick took them
        self._series: dict[str, list[np.ndarray]] = {
            k: [] for k in ("gpu_w", "tj", "clock", "throttled", "rack_it_w", "cap", "cause", "activity")
        }
        machine.recorder.add_sink(self._on_block)
        self.ticks = 0
        self.tick_ends: list[float] = []  # simulated time at the end of every tick (idle ticks are longer)
        self.wall_s = 0.0  # time spent in the power/thermal model (what it adds to a run)

    # ------------------------------------------------------------------ geometry
    def _rack_mix(self, machine: Machine) -> None:
        """Racks of the job grouped into types with the same count of GPUs of each class."""
        gpr = machine.cluster.gpus_per_rack
        gpus_all = np.concatenate([c.gpus for c in machine.classes])
        n_racks = int(gpus_all.max() // gpr) + 1
        # One column per class (its GPUs in the rack) and the rack's coolant offset: a hot rack is a type
        # of its own even where its mix of classes matches other racks'.
        counts = np.zeros((n_racks, self.n + 1), dtype=np.float64)
        for k, c in enumerate(machine.classes):
            counts[:, k] = np.bincount(c.gpus // gpr, minlength=n_racks)
        for rack, offset_k in machine.rack_supply_offset.items():
            if rack < n_racks:
                counts[rack, -1] = offset_k
        types, inverse, per_type = np.unique(counts, axis=0, return_inverse=True, return_counts=True)
        self.rack_offset_k = types[:, -1].copy()  # [R_types]: coolant above the supply at the rack's inlet
        types = types[:, :-1]
        self.rack_counts = types.astype(np.float64)  # [R_types, C]: GPUs of each class in a rack of the type
        self.rack_type_racks = per_type.astype(np.float64)  # racks of each type
        self.rack_of_type = inverse.ravel()
        self.rack_idle_gpus = gpr - self.rack_counts.sum(axis=1)  # GPUs in the rack not used by the job
        self.class_in_type = self.rack_counts > 0

    def _set_units(self, unit_class: np.ndarray, unit_types: np.ndarray) -> None:
        """Thermal units (``unit_class[U]``, ``unit_types[U, R_types]``) and what every tick derives from
        them, kept until the units next split."""
        self.unit_class, self.unit_types = unit_class, unit_types
        uc = unit_class
        self._split = len(uc) != self.n  # some class has several units
        self._multi_type = bool((unit_types.sum(axis=1) > 1).any())  # some unit spans several rack types
        self._unit_mix = self.rack_counts[:, uc] * unit_types.T  # [R_types, U]: GPUs of each unit in a rack
        self._unit_thermal = tuple(a[uc] for a in (self.r_jc, self.r_cf, self.c_j, self.c_cp))
        self._unit_clock_params = tuple(a[uc] for a in (self.slowdown, self.slope, self.f_min))
        self._unit_power_params = tuple(a[uc] for a in (self.idle, self.peak, self.kappa, self.f_min))
        self._unit_gpu_cap = self.gpu_cap[uc]
        self._unit_ceiling = self.ceiling[uc]
        self._uncapped = np.maximum(self._unit_gpu_cap, self._unit_power_params[0] * 1.01)

    # ------------------------------------------------------------------ environment
    def _outside_c(self, t_s: np.ndarray | float) -> np.ndarray | float:
        fac = self.p.cooling.facility
        tod = self.s.start_time_of_day_s + np.asarray(t_s)
        if self._ambient is not None:
            hours, temps = self._ambient
            return np.interp((tod / 3600.0) % 24.0, hours, temps, period=24.0)
        # Daily sinusoid peaking at 15:00.
        return fac.outside_temp + fac.diurnal_amplitude * np.cos(
            2 * math.pi * (tod - 15 * 3600.0) / SECONDS_PER_DAY
        )

    def _supply_c(self, t_s: np.ndarray | float) -> np.ndarray | float:
        """Coolant supply: the set point, unless a dry cooler alone cannot get the water that cold."""
        cool = self.p.cooling
        if cool.facility.heat_rejection != "dry_cooler":
            return cool.inlet_temp if np.ndim(t_s) == 0 else np.full(np.shape(t_s), cool.inlet_temp)
        return np.maximum(cool.inlet_temp, self._outside_c(t_s) + cool.facility.approach)

    def supply_at_time_of_day(self, tod_s: np.ndarray) -> np.ndarray:
        """The coolant supply at local times of day (seconds from midnight): what a job-level replay asks
        to know whether the weather reaches the GPUs."""
        return np.asarray(self._supply_c(np.asarray(tod_s, dtype=np.float64) - self.s.start_time_of_day_s))

    def _rack_input_w(self, it_w: float) -> float:
        """One rack's input power for an IT load of ``it_w`` (distribution and PSU losses)."""
        return float(_rack_input_power(self.p, np.array([[it_w]]))[0][0, 0])

    def _it_budget(self, input_limit_w: float) -> float:
        """The rack IT load whose input (through distribution and the PSU curve) is ``input_limit_w``:
        `rack.power_limit` is a circuit limit at the rack's input (the datasheet maxima it comes from are
        measured at the wall), so the caps budget the IT load below it by the conversion loss."""
        lo, hi = 0.0, input_limit_w  # input >= IT load: the budget is below the limit
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self._rack_input_w(mid) <= input_limit_w else (lo, mid)
        return lo

    def _steady_coolant_c(self, supply_c: float, class_w: np.ndarray) -> np.ndarray:
        """Per class, the coolant its GPUs see at steady state when each class's GPUs draw ``class_w``: the
        supply plus half the loop's rise at each rack type's IT load (its GPUs of every class, its idle GPUs
        and static load), the warmest of the rack types the class spans (as in a tick). Per class, not per
        thermal unit: it is also asked after a run, when a class may have split into several units."""
        rack_it = self.rack_counts @ class_w + self.rack_idle_gpus * self.p.accelerator.idle_power
        rack_it = rack_it + self.static_rack_w
        rise = self.design_rise_k * rack_it / self.p.rack.power_limit * self._liquid_share()
        inlet = supply_c + self.rack_offset_k + 0.5 * rise
        return np.where(self.class_in_type.T, inlet[None, :], -np.inf).max(axis=1)

    def _steady_unit_coolant_c(self, supply_c: float, unit_w: np.ndarray) -> np.ndarray:
        """Per thermal unit, the steady coolant at its rack types (as ``_steady_coolant_c`` per class)."""
        rack_it = self._unit_mix @ unit_w + self.rack_idle_gpus * self.p.accelerator.idle_power
        rack_it = rack_it + self.static_rack_w
        rise = self.design_rise_k * rack_it / self.p.rack.power_limit * self._liquid_share()
        inlet = supply_c + self.rack_offset_k + 0.5 * rise
        return np.where(self.unit_types, inlet[None, :], -np.inf).max(axis=1)

    def _split_hot_racks(self) -> None:
        """A class spanning racks fed different coolant (the workload's ``hot_racks``) splits into one unit
        per rack type from the start, each at the steady state of its own rack's heat: started at the
        warmest rack's (the class's warm state), the cool racks' GPUs would run a short run hot and
        throttled where --fidelity full has them cool and at full clock."""
        if not np.any(self.rack_offset_k > 0.0):
            return
        self._split_diverged(self.rack_offset_k, np.zeros(len(self.rack_offset_k), dtype=bool))
        if not self._split:
            return
        uc, cool = self.unit_class, self.p.cooling
        f_cap_u = self.f_cap_start[uc]
        f_u, p_w, t_f = self._thermal_steady_state(f_cap_u, self.warm_activity[uc], units=True)
        self.tj = t_f + p_w * (cool.r_junction_plate + cool.r_plate_coolant)
        self.tcp = t_f + p_w * cool.r_plate_coolant
        self.unit_clock = np.round(f_u, 6)
        class_clock = np.full(self.n, np.inf)
        np.minimum.at(class_clock, uc, self.unit_clock)
        self.m.clock[:] = class_clock.tolist()
        self.clock_cause = self._causes(
            self.unit_clock, f_u < f_cap_u - 1e-12, f_u >= self._unit_ceiling - 1e-12
        )
        # per class, the hottest unit's start (what the per-class series report)
        order = np.lexsort((-self.tj, uc))
        hottest = order[np.unique(uc[order], return_index=True)[1]]
        self.f_start = np.minimum(self.f_start, class_clock)
        self.tj_start, self.tcp_start = self.tj[hottest].copy(), self.tcp[hottest].copy()

    def warm_state(self, activity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per class: the clock, junction and cold-plate temperatures of a job that has long run at
        ``activity`` (mean share of peak dynamic power) under the starting caps."""
        cool = self.p.cooling
        f, p_w, t_f = self._thermal_steady_state(self.f_cap_start, activity)
        return f, t_f + p_w * (cool.r_junction_plate + cool.r_plate_coolant), t_f + p_w * cool.r_plate_coolant

    def _thermal_steady_state(
        self, f_cap: np.ndarray, activity: np.ndarray, units: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per class (per thermal unit with ``units``): the clock, GPU power and coolant temperature of
        sustained work at ``activity`` once the thermal throttle has settled, no faster than ``f_cap`` (the
        power caps' clock). The throttle clock falls as the junction warms and the junction warms with the
        clock, so the steady clock is the one where they meet (bisection: f minus the throttle clock at f's
        junction grows with f)."""
        cool = self.p.cooling
        r_total = cool.r_junction_plate + cool.r_plate_coolant
        supply = float(self._supply_c(0.0))
        idx = self.unit_class if units else np.arange(self.n)
        idle, peak, kappa, slowdown, slope, f_min = (
            a[idx] for a in (self.idle, self.peak, self.kappa, self.slowdown, self.slope, self.f_min)
        )
        coolant = self._steady_unit_coolant_c if units else self._steady_coolant_c

        def state(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            p_w = idle + (peak - idle) * activity * f**kappa
            t_f = coolant(supply, p_w)
            t_j = (t_f + p_w * r_total)[:, None]
            f_th = thermal.thermal_clock_factor_ref(t_j, slowdown, slope, f_min)[:, 0]
            return p_w, t_f, f - f_th

        _, _, gap = state(f_cap)
        lo, hi = f_min.copy(), f_cap.copy()
        if np.any(gap > 0):
            for _ in range(50):  # 2**-50 of the clock range
                mid = 0.5 * (lo + hi)
                _, _, g = state(mid)
                lo, hi = np.where(g > 0, lo, mid), np.where(g > 0, mid, hi)
        f = np.where(gap > 0, lo, f_cap)
        p_w, t_f, _ = state(f)
        return f, p_w, t_f

    def _refuse_overheat(self, tj_c: float, hottest: int) -> None:
        """A cooling design that cannot hold sustained work below the shutdown temperature, even with the
        clock throttled to min_clock, is an input error: the GPUs would shut down, not run slower. Where the
        hottest class sits in a hot rack (the workload's ``hot_racks``), the error names that entry."""
        acc, cool = self.p.accelerator, self.p.cooling
        supply = float(self._supply_c(0.0))
        offsets = np.where(self.class_in_type[:, hottest], self.rack_offset_k, 0.0)
        if offsets.max() > 0.0:
            gpr = self.m.cluster.gpus_per_rack
            racks = set((self.m.classes[hottest].gpus // gpr).tolist())
            rack = max(
                (r for r in self.m.rack_supply_offset if r in racks), key=self.m.rack_supply_offset.get
            )
            file, path = self.m.rack_supply_source.get(rack, ("", ""))
            raise ConfigError(
                f"rack {rack}'s GPUs would overheat: with coolant {offsets.max():g} K above the "
                f"{supply:.0f} degC supply their junction settles at {tj_c:.1f} degC even at min_clock, "
                f"above shutdown_temp {acc.shutdown_temp:g} degC",
                file=file or None,
                path=path or "hot_racks",
                value=f"{self.m.rack_supply_offset[rack]:g} K",
                expected="an offset the GPUs survive throttled (a real rack this hot would shut down)",
            )
        fac = cool.facility
        if supply > cool.inlet_temp + 1e-9:  # the weather set the supply (a dry cooler: outside + approach)
            tod = self.s.start_time_of_day_s % SECONDS_PER_DAY
            csv = fac.outside_temp_csv
            raise ConfigError(
                f"at {int(tod // 3600):02d}:{int(tod % 3600 // 60):02d} the outside temperature "
                f"({float(self._outside_c(0.0)):.0f} degC, + approach {fac.approach:g} K) sets the coolant supply "
                f"to {supply:.0f} degC (above its {cool.inlet_temp:g} degC set point): the junction settles at "
                f"{tj_c:.0f} degC even at min_clock, above shutdown_temp {acc.shutdown_temp:g} degC",
                file=self.p.source_file,
                path="cooling.facility.outside_temp_csv" if csv else "cooling.facility.outside_temp",
                value=csv or f"{fac.outside_temp:g} degC (+- {fac.diurnal_amplitude:g} K over the day)",
                expected="a climate the dry cooler can hold the GPUs in at every hour (a multi-day job's "
                "replay simulates the step at 8 times of day)",
                hint="a cooler site, a smaller cooling.facility.approach, or heat_rejection: chiller",
                reads=("cooling.facility.approach", "cooling.facility.diurnal_amplitude"),
            )
        raise ConfigError(
            f"the cooling cannot hold sustained work below the GPU's shutdown temperature: the junction "
            f"settles at {tj_c:.0f} degC even at min_clock, above shutdown_temp {acc.shutdown_temp:g} degC "
            f"(coolant supply {supply:.0f} degC)",
            file=self.p.source_file,
            path="cooling.inlet_temp",
            value=f"{cool.inlet_temp:g} degC",
            expected="a coolant supply cold enough for the GPU's power and thermal resistances",
            hint="lower cooling.inlet_temp, or cooling.r_junction_plate / r_plate_coolant, or cap the power "
            "(accelerator.power_cap)",
        )

    def _full_clock_power(self, activity: np.ndarray) -> np.ndarray:
        """Each unit's demand: its power at full clock for ``activity``, no more than its GPU cap."""
        idle, peak = self._unit_power_params[:2]
        return np.minimum(idle + (peak - idle) * activity, self._unit_gpu_cap)

    def _rack_demand(self, unit_w: np.ndarray) -> np.ndarray:
        """Rack IT power per rack type if every unit drew ``unit_w``: GPUs, idle GPUs and the static load."""
        return (
            self._unit_mix @ unit_w + self.rack_idle_gpus * self.p.accelerator.idle_power + self.static_rack_w
        )

    def _rack_caps(self, engaged: np.ndarray) -> np.ndarray:
        """Per-unit cap: the GPU cap, lowered to its rack's fair share wherever the rack's limit is engaged.
        The share leaves the static load and the job's idle GPUs their power and splits the rest evenly over
        the rack's working GPUs, so capped GPUs can never sum above the limit."""
        if not engaged.any():
            return self._uncapped
        cap, types = self._unit_gpu_cap.copy(), self.unit_types
        limit, idle_w = self.it_limit_w, self.p.accelerator.idle_power
        working = self.rack_counts.sum(axis=1)
        share = (limit - self.static_rack_w - self.rack_idle_gpus * idle_w) / working  # W per GPU
        for r in np.flatnonzero(engaged):
            cap = np.where(types[:, r], np.minimum(cap, share[r]), cap)
        return np.maximum(cap, self._unit_power_params[0] * 1.01)

    # ------------------------------------------------------------------ activity intake
    def _on_block(self, block: np.ndarray) -> None:
        self._queue.append(block[self._consumed_open :])
        self._consumed_open = 0

    def _take_new_rows(self) -> np.ndarray:
        rec: ActivityRecorder = self.m.recorder
        parts = self._queue
        open_rows = rec.open_rows(self._consumed_open)
        self._consumed_open += len(open_rows)
        parts.append(open_rows)
        self._queue = []
        self._rows_taken = rec.rows
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    # ------------------------------------------------------------------ the control loop
    def process(self, done: simpy.Event) -> Generator[simpy.Event, Any, None]:
        """Tick until the workload is done, then close the last partial tick."""
        env = self.m.env
        while not done.triggered:
            yield env.any_of([env.timeout(self._horizon()), done])
            self.tick(env.now)

    def _horizon(self) -> float:
        """One tick; or, while nothing runs or waits to be recorded, the whole ticks before the next event
        (at most MAX_IDLE_TICKS). An idle server waiting for requests would otherwise tick through every
        50 ms of it; the long tick gives the same samples, and the clocks the short ticks would have set."""
        tick = self.s.tick_s
        if len(self._carry[0]) or self.m.recorder.rows != self._rows_taken or self.m.has_unrecorded_ops():
            return tick
        env = self.m.env
        nxt = env.peek()
        if math.isinf(nxt):  # only this controller's ticks would keep the clock moving, forever
            raise RacksimError(
                f"the workload is stuck at t = {env.now:.6g} s: it has not finished and nothing is scheduled "
                "(a receive whose send never comes, or a collective some rank class never joins)"
            )
        # End strictly before the next event: an op it starts must see the clock the short ticks would set.
        whole = min(math.ceil((nxt - env.now) / tick) - 1, MAX_IDLE_TICKS)
        while whole > 1 and env.now + tick * whole >= nxt:
            whole -= 1
        return tick * whole if whole > 1 else tick

    def tick(self, t_now: float) -> None:
        t0 = time.perf_counter()
        try:
            self._tick(t_now)
        finally:
            self.wall_s += time.perf_counter() - t0

    def _tick(self, t_now: float) -> None:
        k = max(1, round((t_now - self.t_prev) / self.s.sample_s))
        dt = (t_now - self.t_prev) / k
        if dt <= 0:
            return
        t0 = time.perf_counter()
        rows = self._take_new_rows()
        self.wall_s -= time.perf_counter() - t0  # converting rows is the recorder's work, done once anyway
        start, end, cls, ch, lvl = _intervals(self._carry, rows)
        clock_c = np.asarray(self.m.clock, dtype=np.float64)
        clock = np.repeat(clock_c[:, None], k, axis=1)
        gpu_w_c, act = power.activity_power(
            start, end, cls, ch, lvl, self.weights, self.idle, self.peak, clock, self.kappa, self.t_prev, dt
        )
        keep = end > t_now
        self._carry = (start[keep], end[keep], cls[keep], ch[keep], lvl[keep])
        uc, split = self.unit_class, self._split
        if split:
            # A unit faster than its class does the same work sooner and then waits: activity x f_c/f_u at
            # clock f_u, so its dynamic power scales by (f_u/f_c)^(kappa-1).
            idle_u, _, kappa_u, _ = self._unit_power_params
            idle = idle_u[:, None]
            scale = (self.unit_clock / clock_c[uc]) ** (kappa_u - 1.0)
            gpu_w = idle + (gpu_w_c[uc] - idle) * scale[:, None]
        else:
            gpu_w = gpu_w_c
        mix = self._unit_mix  # [R_types, U]: GPUs of each unit in a rack
        # Racks: GPU power of each unit present, idle GPUs, and the static non-GPU load.
        rack_it = mix @ gpu_w + (self.rack_idle_gpus * self.p.accelerator.idle_power)[:, None]
        rack_it += self.static_rack_w
        times = self.t_prev + dt * (np.arange(k) + 0.5)
        rise = self.design_rise_k * rack_it / self.p.rack.power_limit  # [R_types, k]
        coolant_rack = (
            self._supply_c(times)[None, :] + self.rack_offset_k[:, None] + 0.5 * rise * self._liquid_share()
        )
        if len(coolant_rack) == 1:  # one rack type: every unit sees it
            coolant = coolant_rack.repeat(len(uc), axis=0)
        else:  # a unit spread over several rack types (not split yet: they agree) sees the warmest of them
            coolant = np.where(self.unit_types[:, :, None], coolant_rack[None, :, :], -np.inf).max(axis=1)
        tj, tcp = thermal.rc_thermal(gpu_w, coolant, *self._unit_thermal, self.tj, self.tcp, dt)
        cause = np.repeat(self.clock_cause[:, None], k, axis=1)
        throttled = np.repeat(self._class_throttled(self.unit_clock[:, None]), k, axis=1)
        ts = self.s.tick_samples
        cap_early = None  # [C, samples]: the caps the long idle tick's first short ticks ended with
        if k > ts:  # a long idle tick: the clocks its short ticks would have set, and their history
            clock, cause, throttled, cap_early = self._idle_clocks(clock, cause, throttled, tj, act)
        self.tj, self.tcp = tj[:, -1].copy(), tcp[:, -1].copy()
        # Next tick's clocks: thermal throttle and power caps (GPU cap, or share of an exceeded rack limit).
        last = slice((math.ceil(k / ts) - 1) * ts if k > ts else 0, None)  # the last short tick's samples
        over = self._update_caps(act[:, last].mean(axis=1)[uc])
        f_thermal = thermal.thermal_clock_factor(self.tj[:, None], *self._unit_clock_params)
        self.unit_clock, class_clock, self.clock_cause = self._clocks(
            f_thermal[:, 0], self._cap_clock()[:, 0]
        )
        self.m.clock[:] = class_clock.tolist()
        if split:  # series stay per class: GPU-weighted power, hottest junction, tightest cap
            gpus = mix.T @ self.rack_type_racks  # [U]
            weight = np.zeros((self.n, len(uc)))
            weight[uc, np.arange(len(uc))] = gpus / np.bincount(uc, weights=gpus, minlength=self.n)[uc]
            gpu_w_series = weight @ gpu_w
            tj_series = np.full((self.n, k), -np.inf)
            np.maximum.at(tj_series, uc, tj)
        else:
            gpu_w_series, tj_series = gpu_w, tj
        cap_block = np.repeat(self._class_cap()[:, None], k, axis=1)
        if cap_early is not None:
            cap_block[:, : cap_early.shape[1]] = cap_early
        for key, value in (
            ("gpu_w", gpu_w_series),
            ("tj", tj_series),
            ("clock", clock),
            ("throttled", throttled),
            ("rack_it_w", rack_it),
            ("cap", cap_block),
            ("cause", cause),
            ("activity", act),
        ):
            self._series[key].append(value)
        if self._multi_type:
            self._split_diverged(coolant_rack.mean(axis=1), over)
        self.t_prev = t_now
        self.tick_ends.append(t_now)
        self.ticks += 1

    def _clocks(self, f_thermal: np.ndarray, f_cap: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per unit the clock, per class the clock it runs (its slowest unit's) and what set it, from the units'
        thermal and cap clocks and their straggler ceilings. Rounded: keeps the engine's memos effective."""
        f_limit = np.minimum(f_cap, self._unit_ceiling)
        unit_clock = np.round(np.minimum(f_thermal, f_limit), 6)
        if self._split:
            class_clock = np.full(self.n, np.inf)
            np.minimum.at(class_clock, self.unit_class, unit_clock)
        else:  # one unit per class, in class order
            class_clock = unit_clock
        cause = self._causes(
            unit_clock, f_thermal <= f_limit, self._unit_ceiling <= np.minimum(f_thermal, f_cap)
        )
        return unit_clock, class_clock, cause

    def _causes(
        self, unit_clock: np.ndarray, thermal_sets: np.ndarray, ceiling_sets: np.ndarray
    ) -> np.ndarray:
        """Per class, what set the clock of its slowest unit (the clock the class runs): nothing (full clock),
        a straggler's clock ceiling, heat (the thermal clock is the lower one), the rack limit (a cap lowered
        to the rack's share) or the GPU's own power cap."""
        uc = self.unit_class
        if unit_clock.min() >= 1.0:  # every unit at full clock: nothing set it
            return np.zeros(self.n, dtype=np.int8)
        capped = np.where(self.cap < self._unit_gpu_cap * (1.0 - 1e-9), CAUSE_RACK_LIMIT, CAUSE_POWER_CAP)
        unit_cause = np.where(thermal_sets, CAUSE_THERMAL, capped)
        unit_cause = np.where(ceiling_sets & (self._unit_ceiling < 1.0), CAUSE_STRAGGLER, unit_cause)
        unit_cause = np.where(unit_clock >= 1.0, CAUSE_NONE, unit_cause)
        if len(uc) == self.n:  # one unit per class (units stay ordered by class): its own cause
            return unit_cause.astype(np.int8)
        slowest = np.lexsort((unit_clock, uc))  # units by class, slowest first
        first = np.unique(uc[slowest], return_index=True)[1]
        out = np.zeros(self.n, dtype=np.int8)
        out[uc[slowest[first]]] = unit_cause[slowest[first]]
        return out

    def _cap_clock(self) -> np.ndarray:
        """``[U, 1]`` clock that holds each unit at its cap, for the busiest of the last HOLD_TICKS ticks (as
        firmware holding a cap through a phase change would)."""
        idle_u, peak_u, kappa_u, f_min_u = self._unit_power_params
        return power.clock_for_power_cap(
            self.cap, idle_u, peak_u, self._activity_hist.max(axis=0)[:, None], kappa_u, f_min_u
        )

    def _class_cap(self) -> np.ndarray:
        """Per class, the tightest cap of its units."""
        if not self._split:
            return self.cap.copy()
        out = np.full(self.n, np.inf)
        np.minimum.at(out, self.unit_class, self.cap)
        return out

    def _idle_clocks(
        self, clock: np.ndarray, cause: np.ndarray, throttled: np.ndarray, tj: np.ndarray, act: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Clock and cause series of a long idle tick: from its second short tick on, what the short ticks
        would have set at the end of the one before. Each short tick enters the caps' history, so a cap held
        for a busy tick is held for HOLD_TICKS short ticks into the stretch, as 50 ms ticks hold it (counted
        as one tick, a 10 s stretch kept the cap of the burst before it for the next burst: that burst ran
        capped, the short ticks' run at full clock in its first tick, a different step time). Once the
        history holds only the stretch, no cap binds (no activity) and the clock is the thermal clock.
        Also returns the classes' throttled GPU shares (``_class_throttled``) and the caps the first of those
        short ticks ended with, ``[C, held short ticks' samples]`` (the later ones end with the tick's own)."""
        ts, uc, k = self.s.tick_samples, self.unit_class, tj.shape[1]
        n_short = math.ceil(k / ts)
        clock, cause, throttled = clock.copy(), cause.copy(), throttled.copy()
        held = min(n_short - 1, HOLD_TICKS)  # short ticks whose end may still see a cap (stepped one by one)
        cap_early = np.empty((self.n, held * ts))
        for j in range(held):
            self._update_caps(act[:, j * ts : (j + 1) * ts].mean(axis=1)[uc])
            f_th = thermal.thermal_clock_factor(
                tj[:, (j + 1) * ts - 1 : (j + 1) * ts], *self._unit_clock_params
            )
            unit_clock, class_clock, class_cause = self._clocks(f_th[:, 0], self._cap_clock()[:, 0])
            span = slice((j + 1) * ts, (j + 2) * ts)
            clock[:, span] = class_clock[:, None]
            cause[:, span] = class_cause[:, None]
            throttled[:, span] = self._class_throttled(unit_clock[:, None])
            cap_early[:, j * ts : (j + 1) * ts] = self._class_cap()[:, None]
        if (
            held < n_short - 1
        ):  # the rest: no cap binds, the thermal clock of the junction a short tick before
            ends = tj[
                :, (held + 1) * ts - 1 :: ts
            ]  # junction at the end of every whole short tick from there
            f_unit = np.round(
                thermal.thermal_clock_factor(ends, self.slowdown[uc], self.slope[uc], self.f_min[uc]), 6
            )
            if len(uc) == self.n:  # one unit per class (units stay ordered by class)
                f_class = f_unit
            else:
                f_class = np.full((self.n, f_unit.shape[1]), np.inf)
                np.minimum.at(f_class, uc, f_unit)
            f_class = np.minimum(f_class, self.ceiling[:, None])  # a straggler stays at its ceiling
            rest = slice((held + 1) * ts, None)
            cols = np.arange(k - (held + 1) * ts) // ts  # a partial last short tick too
            clock[:, rest] = f_class[:, cols]
            f_held = np.minimum(f_unit, self._unit_ceiling[:, None])  # a straggler stays at its ceiling
            throttled[:, rest] = self._class_throttled(f_held)[:, cols]
            slow = np.where(clock[:, rest] >= self.ceiling[:, None], CAUSE_STRAGGLER, CAUSE_THERMAL)
            cause[:, rest] = np.where(clock[:, rest] < 1.0, slow, CAUSE_NONE)
        return clock, cause, throttled, cap_early

    def _class_throttled(self, unit_clock: np.ndarray) -> np.ndarray:
        """``[C, m]`` share of each class's GPUs below full clock, from its units' clocks ``[U, m]``: a class
        runs at its slowest unit's clock, but a unit that is not throttled runs at full clock and waits."""
        below = (unit_clock < 1.0 - 1e-9).astype(np.float64)
        if not self._split:  # one unit per class, in class order
            return below
        gpus = self._unit_mix.T @ self.rack_type_racks  # [U]
        out = np.zeros((self.n, below.shape[1]))
        np.add.at(out, self.unit_class, gpus[:, None] * below)
        return out / np.bincount(self.unit_class, weights=gpus, minlength=self.n)[:, None]

    def _liquid_share(self) -> float:
        cool = self.p.cooling
        return cool.liquid_fraction if cool.type == "liquid" else 1.0

    def _update_caps(self, activity: np.ndarray) -> np.ndarray:
        """Per-unit caps for the next tick, from the racks' demand (their power at full clock for this tick's
        activity per unit): a rack's limit is engaged while its demand has exceeded the limit within the last
        HOLD_TICKS ticks. Budgeting from demand, not from the power drawn under the cap, keeps a capped
        rack capped instead of lifting the cap whenever the capped draw dips under the limit. Returns which
        rack types have their limit engaged."""
        # Ring buffers: only their maxima are read, so the newest row overwrites the oldest in place.
        row = self._hist_row = (self._hist_row + 1) % HOLD_TICKS
        self._activity_hist[row] = activity
        self._demand_hist[row] = self._rack_demand(self._full_clock_power(activity))
        engaged = self._demand_hist.max(axis=0) > self.it_limit_w
        self.cap = self._rack_caps(engaged)
        return engaged

    def _split_diverged(self, coolant_c: np.ndarray, over: np.ndarray) -> None:
        """Split every unit whose rack types now differ (coolant by more than SPLIT_TOLERANCE_K, or some
        over the rack limit and some not) into one unit per rack type, each starting from the unit's state."""
        types = self.unit_types
        multi = types.sum(axis=1) > 1
        hot = np.where(types, coolant_c[None, :], -np.inf).max(axis=1)
        cold = np.where(types, coolant_c[None, :], np.inf).min(axis=1)
        over_any = (types & over[None, :]).any(axis=1)
        over_all = (~types | over[None, :]).all(axis=1)
        diverged = multi & ((hot - cold > SPLIT_TOLERANCE_K) | (over_any & ~over_all))
        if not diverged.any():
            return
        # Each diverged unit becomes one unit per rack type; the others stay. Units stay ordered by class.
        src = [u for u in range(len(types)) for _ in (np.flatnonzero(types[u]) if diverged[u] else (None,))]
        src = np.array(src, dtype=np.int64)
        new_types = types[src].copy()
        row = 0
        for u in range(len(types)):
            if diverged[u]:
                for r in np.flatnonzero(types[u]):
                    new_types[row] = False
                    new_types[row, r] = True
                    row += 1
            else:
                row += 1
        self._set_units(self.unit_class[src], new_types)
        self.unit_clock = self.unit_clock[src]
        self.tj, self.tcp, self.cap = self.tj[src], self.tcp[src], self.cap[src]
        self._activity_hist = self._activity_hist[:, src]

    # ------------------------------------------------------------------ results
    def idle_facility_power_w(self, time_s: np.ndarray, width_s: np.ndarray) -> float:
        """Facility power of the job's racks with every GPU at idle power (the static load and the fabric
        share still drawing), through the same chain as the run, time-weighted over its samples (same
        weather): what a multi-day job draws while it writes a checkpoint or waits out a recovery. No
        power smoothing: its floor holds the GPUs of a running job, not of a stopped one."""
        rack_it = (
            self.rack_counts @ self.idle
            + self.rack_idle_gpus * self.p.accelerator.idle_power
            + self.static_rack_w
        )
        chain = _FacilityChain.of(self, np.tile(rack_it, (len(time_s), 1)), np.asarray(time_s))
        return float(np.dot(chain.facility_w, width_s) / np.sum(width_s))

    def finalize(self) -> PowerResult:
        """Close the series at the last tick (the moment the workload finished) and roll everything up."""
        t0 = time.perf_counter()
        result = PowerResult.build(self, self.t_prev)
        self.wall_s += time.perf_counter() - t0
        return result


def _static_rack_power(p: Profile) -> float:
    """Non-GPU IT power of one rack under load: CPUs, NICs, switches, tray overhead and fans."""
    r = p.rack
    nics = r.gpus_per_tray * p.scale_out.nics_per_gpu
    per_tray = r.cpus_per_tray * r.cpu_power + nics * r.nic_power + r.tray_other_power + r.fan_power
    switches = (
        r.switch_trays * r.switch_tray_power if r.switch_trays else r.trays_per_rack * r.switch_tray_power
    )
    return r.trays_per_rack * per_tray + switches


def _empty_intervals() -> tuple[np.ndarray, ...]:
    return (np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))


def _intervals(carry: tuple[np.ndarray, ...], rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """The carried intervals, then one per non-zero activity channel of each event row (start, end, class,
    channel, level)."""
    return power.activity_intervals(
        *carry,
        rows["t_start"],
        rows["t_end"],
        rows["rank_class"],
        rows["u_tensor"],
        rows["u_hbm"],
        rows["u_scale_up"],
        rows["u_scale_out"],
    )


@dataclass
class PowerResult:
    """Series and totals of one run's power, thermal and facility behaviour."""

    time_s: np.ndarray  # [T] sample midpoints
    width_s: np.ndarray  # [T] sample widths (equal inside a tick; the last tick may be shorter)
    gpu_w: np.ndarray  # [T, C] per GPU of each class
    tj_c: np.ndarray  # [T, C]
    clock: np.ndarray  # [T, C]
    rack_it_w: np.ndarray  # [T, R_types] IT load of one rack of each type (before rack PSUs)
    rack_input_w: np.ndarray  # [T, R_types] after PSUs and distribution
    rack_loss_w: np.ndarray  # [T, R_types]
    coolant_out_c: np.ndarray  # [T, R_types]
    it_w: np.ndarray  # [T] all racks of the job
    cooling_w: np.ndarray  # [T]
    facility_w: np.ndarray  # [T]
    grid_w: np.ndarray  # [T] facility draw after the configured mitigations
    gpu_energy_j: float
    other_it_energy_j: float
    conversion_loss_j: float
    cooling_energy_j: float
    overhead_energy_j: float
    racks_per_type: np.ndarray  # [R_types] racks of each rack type (rack_w is per rack of a type)
    clock_cause: np.ndarray  # [T, C] int8: what set each class's clock (CAUSE_* codes)
    mean_activity: np.ndarray  # [C] time-weighted mean activity (share of peak dynamic power at full clock)
    summary: dict[str, Any]
    # [T, C] share of each class's GPUs below full clock: 0 or 1, but a class spanning racks of different
    # heat has units that throttle on their own (its clock is its slowest unit's)
    throttled_share: np.ndarray | None = None

    @classmethod
    def build(cls, ctl: PowerController, t_end: float) -> PowerResult:
        p, s = ctl.p, ctl.s
        ser = {k: np.concatenate(v, axis=1).T for k, v in ctl._series.items()}  # [T, ...]
        n_t = ser["gpu_w"].shape[0]
        # Sample midpoints: the last tick may be shorter, so times come from the tick widths.
        time_s = _sample_times(ctl, n_t, t_end)
        dt = np.diff(np.append(0.0, _sample_edges(ctl, n_t, t_end)))
        mult = ctl.m.gpu_multiplicity().astype(np.float64)
        rack = p.rack
        requested = _FacilityChain.of(ctl, ser["rack_it_w"], time_s)
        # Power smoothing (floor, ramp limit) burns GPU power the work does not need: that surplus is drawn
        # like any IT load (through the PSUs, then cooled), so the gpu / rack / IT / facility series carry
        # it and the energy totals are exactly their integrals. Where the up-ramp limit holds a GPU below
        # its request the series keep the request (the timing model does not slow the work), and only the
        # grid series shows the ramp-limited draw.
        gpu_w = ser["gpu_w"]
        if rack.power_smoothing is not None:
            smoothed = _smoothed_gpu_power(ctl, ser["gpu_w"], s.sample_s)  # [T, C]
            surplus_w = np.maximum(smoothed - ser["gpu_w"], 0.0)
            gpu_w = ser["gpu_w"] + surplus_w
            drawn = _FacilityChain.of(ctl, ser["rack_it_w"] + surplus_w @ ctl.rack_counts.T, time_s)
            # the grid sees the smoothed draw, up-ramp cuts included, through the same chain
            ramped_it = ser["rack_it_w"] + (smoothed - ser["gpu_w"]) @ ctl.rack_counts.T
            grid_base_w = _FacilityChain.of(ctl, ramped_it, time_s).facility_w
            smoothing_j = float(np.sum(surplus_w @ mult * dt))
        else:
            drawn, smoothing_j = requested, 0.0
            grid_base_w = requested.facility_w
        rack_it, rack_in, rack_loss = drawn.rack_it_w, drawn.rack_in_w, drawn.rack_loss_w
        it_w, cooling_w, overhead_w, facility_w = (
            drawn.it_w,
            drawn.cooling_w,
            drawn.overhead_w,
            drawn.facility_w,
        )
        coolant_out = drawn.coolant_out_c
        # Energy bookkeeping (J): integral of each series; facility = IT + cooling + other overhead.
        gpu_e = float(np.sum(gpu_w @ mult * dt)) + float(
            np.sum(ctl.rack_idle_gpus @ ctl.rack_type_racks) * p.accelerator.idle_power * np.sum(dt)
        )
        it_e = float(np.sum(it_w * dt))
        loss_e = float(np.sum((rack_loss @ ctl.rack_type_racks) * dt))
        cool_e = float(np.sum(cooling_w * dt))
        over_e = float(np.sum(overhead_w * dt))
        other_it_e = it_e - gpu_e - loss_e
        grid_w, storage = _grid_draw(ctl, dt, grid_base_w)
        mitig = {"smoothing_energy_j": smoothing_j, **storage}
        swing, ramp, band = grid.power_swing(requested.facility_w, s.sample_s)  # the workload's own
        swing_m, ramp_m, band_m = grid.power_swing(grid_w, s.sample_s)
        total_t = float(np.sum(dt))
        # a class's GPUs below full clock (its unthrottled units run at full clock and wait for the slowest)
        throttled = ser["throttled"] @ mult / mult.sum()
        throttle = _throttle_causes(ser["throttled"], ser["cause"], mult / mult.sum(), dt)
        # One rack whose every GPU draws the job's mean GPU power (plus the static load and the conversion
        # loss in the run's proportion): what fleet sizing needs when the job itself fills no whole rack.
        job_gpu_w = float(np.sum(gpu_w @ mult * dt)) / (float(mult.sum()) * total_t)
        # the racks' own input over their IT load: the fabric share in it_e is outside the racks and has no
        # conversion loss (counted in, it diluted the factor: a full gb200 rack read 0.5 % under its input)
        rack_in_e = it_e - ctl.fabric_w * total_t
        lossless = rack_in_e - loss_e
        loss_factor = rack_in_e / lossless if lossless > 0 else 1.0
        full_rack_it_w = (ctl.static_rack_w + ctl.m.cluster.gpus_per_rack * job_gpu_w) * loss_factor
        # a full rack cannot load its PSUs beyond its limit: it would throttle there (the per-GPU throughput
        # of a run that did not fill its rack is then optimistic for a full one)
        full_rack_it_w = min(full_rack_it_w, p.rack.power_limit)
        summary = {
            "avg_it_power_w": it_e / total_t,
            "peak_it_power_w": float(np.max(it_w)),
            "facility_power_w": float((it_e + cool_e + over_e) / total_t),
            "pue": (it_e + cool_e + over_e) / it_e,
            "power_swing_w": swing,
            "max_ramp_w_per_s": ramp,
            "swing_band_energy_fraction": band,
            "power_swing_mitigated_w": swing_m,
            "max_ramp_mitigated_w_per_s": ramp_m,
            "swing_band_energy_fraction_mitigated": band_m,
            "throttle_time_fraction": float(np.sum(throttled * dt) / total_t),
            **throttle,
            "min_clock_factor": float(np.min(ser["clock"])) if ser["clock"].size else 1.0,
            "slowdown_temp_c": p.accelerator.slowdown_temp,
            "max_junction_temp_c": float(np.max(ser["tj"])),
            "thermal_units": len(ctl.unit_class),
            "max_coolant_out_c": float(np.max(coolant_out)),
            "rack_power_w": float(np.max(dt @ rack_in) / total_t),  # time-weighted mean input
            "full_rack_it_power_w": full_rack_it_w,
            "gpu_energy_j": gpu_e,
            "it_energy_j": it_e,
            "facility_energy_j": it_e + cool_e + over_e,
            "conversion_loss_energy_j": loss_e,
            "fabric_power_w": ctl.fabric_w,
            "fabric_energy_j": ctl.fabric_w * total_t,
            "cooling_energy_j": cool_e,
            "overhead_energy_j": over_e,
            **mitig,
        }
        return cls(
            time_s,
            dt,
            gpu_w,
            ser["tj"],
            ser["clock"],
            rack_it,
            rack_in,
            rack_loss,
            coolant_out,
            it_w,
            cooling_w,
            facility_w,
            grid_w,
            gpu_e,
            other_it_e,
            loss_e,
            cool_e,
            over_e,
            ctl.rack_type_racks.copy(),
            ser["cause"],
            (dt @ ser["activity"]) / total_t if total_t > 0 else np.zeros(ser["activity"].shape[1]),
            summary,
            ser["throttled"],
        )

    def with_thermal_start(self, ctl: PowerController, tj0: np.ndarray, tcp0: np.ndarray) -> PowerResult:
        """The same run started from other junction and plate temperatures, when no clock depended on them
        (nothing throttled on heat): the RC network is linear and the GPUs' power does not depend on their
        temperature, so the junction series moves by the free response to the change of start,
        ``x(t) = expm(M t) dx0`` (eigendecomposition of each class's 2x2 system, as rc_thermal_ref)."""
        ends = np.cumsum(self.width_s)  # the series holds each sample's end state
        shift = np.empty_like(self.tj_c)
        m = thermal.rc_matrix(ctl.r_jc, ctl.r_cf, ctl.c_j, ctl.c_cp)
        for c in range(ctl.n):  # per class: a [T, 2] decay, never [T, C, 2]
            lam, vec = np.linalg.eig(m[c])
            coef = np.linalg.solve(vec, np.array([tj0[c] - ctl.tj_start[c], tcp0[c] - ctl.tcp_start[c]]))
            shift[:, c] = np.real(np.exp(np.outer(ends, lam)) @ (vec[0, :] * coef))
        tj = self.tj_c + shift
        summary = dict(self.summary)
        if tj.size:
            summary["max_junction_temp_c"] = float(np.max(tj))
        return dataclasses.replace(self, tj_c=tj, summary=summary)

    def series(self) -> dict[str, dict[str, tuple[np.ndarray, str, str]]]:
        """Trace groups: name -> (data, units, long name), for ``TraceWriter.write_series``."""
        return {
            "power": {
                "sample_s": (self.width_s, "s", "width of each sample (energy = sum of power x width)"),
                "gpu_w": (self.gpu_w, "W", "power of one GPU of each rank class"),
                "rack_w": (self.rack_input_w, "W", "input power of one rack of each rack type"),
                "rack_it_w": (self.rack_it_w, "W", "IT load of one rack of each rack type (before PSUs)"),
                "it_w": (
                    self.it_w,
                    "W",
                    "IT power of all racks of the job and its share of the scale-out fabric",
                ),
                "cooling_w": (self.cooling_w, "W", "facility cooling power (pumps, chiller, fans)"),
                "facility_w": (self.facility_w, "W", "facility power (IT + cooling + other overhead)"),
                "grid_w": (self.grid_w, "W", "facility draw after GPU smoothing and rack storage"),
            },
            "thermal": {
                "t_junction_c": (self.tj_c, "degC", "GPU junction temperature of each rank class"),
                "clock_factor": (self.clock, "1", "GPU clock as a fraction of max clock"),
                **(
                    {
                        "throttled_share": (
                            self.throttled_share,
                            "1",
                            "share of the class's GPUs below full clock (the clock is its slowest GPUs')",
                        )
                    }
                    if self.throttled_share is not None
                    else {}
                ),
                "clock_cause": (
                    self.clock_cause,
                    "1",
                    "what set the clock: 0 nothing (full clock), 1 heat, 2 rack power limit, 3 GPU power cap, "
                    "4 a straggler's clock ceiling",
                ),
                "coolant_out_c": (
                    self.coolant_out_c,
                    "degC",
                    "coolant (or exhaust air) outlet of each rack type",
                ),
            },
        }


START_TOLERANCE_K = 0.05  # a start this close to the job's own steady state needs no second look


def settle_thermal_start(ctl: PowerController, result: PowerResult) -> tuple[PowerResult, np.ndarray | None]:
    """Check a run's thermal start against the job's own mean activity, which only the run measures.

    The controller starts the heat at the steady state of sustained compute; a job with bubbles, waits or
    a light serving load runs cooler, and over a run shorter than the heatsink's time constant that start
    decides the junction temperatures and any throttling. Returns ``(result, None)`` when the start did
    not matter (close enough); ``(corrected, None)`` when nothing throttled on heat either way (the
    junction series is moved exactly, :meth:`PowerResult.with_thermal_start`); or ``(result, activity)``
    when heat set some clock, so the run must be simulated again from the steady state of ``activity``."""
    activity = result.mean_activity
    f_new, tj_new, tcp_new = ctl.warm_state(activity)
    if np.all(np.abs(tj_new - ctl.tj_start) <= START_TOLERANCE_K):
        return result, None
    unbound = np.all(ctl.f_start >= ctl.f_cap_start - 1e-12) and np.all(f_new >= ctl.f_cap_start - 1e-12)
    if unbound and result.summary.get("throttle_thermal_fraction", 0.0) == 0.0:
        corrected = result.with_thermal_start(ctl, tj_new, tcp_new)
        if corrected.summary["max_junction_temp_c"] <= ctl.p.accelerator.slowdown_temp:
            return corrected, None
    return result, activity


THROTTLE_CAUSE_KEYS = {  # summary key -> (clock_cause code, throttle_cause value)
    "throttle_thermal_fraction": (CAUSE_THERMAL, "thermal"),
    "throttle_rack_power_fraction": (CAUSE_RACK_LIMIT, "rack power limit"),
    "throttle_power_cap_fraction": (CAUSE_POWER_CAP, "power cap"),
    "throttle_straggler_fraction": (CAUSE_STRAGGLER, "straggler"),
}


def _throttle_causes(
    throttled: np.ndarray, cause: np.ndarray, share: np.ndarray, dt: np.ndarray
) -> dict[str, Any]:
    """GPU-weighted share of the run each limiter held the clock below full (they add up to the throttled
    share: every throttled sample has a recorded cause), from each class's throttled share of GPUs
    (``[T, C]``) and the cause the controller recorded when it set each tick's clock, and the largest one."""
    total = float(np.sum(dt))
    out: dict[str, Any] = {}
    for key, (code, _name) in THROTTLE_CAUSE_KEYS.items():
        mask = throttled * (cause == code)
        out[key] = float(np.sum((mask @ share) * dt) / total) if total > 0 else 0.0
    worst = max(THROTTLE_CAUSE_KEYS, key=lambda k: out[k])
    out["throttle_cause"] = THROTTLE_CAUSE_KEYS[worst][1] if out[worst] > 0.0 else None
    return out


def _sample_edges(ctl: PowerController, n_t: int, t_end: float) -> np.ndarray:
    """End time of every sample (ticks are split into equal samples)."""
    edges: list[np.ndarray] = []
    t0 = 0.0
    blocks = ctl._series["gpu_w"]
    for i, (block, t1) in enumerate(zip(blocks, ctl.tick_ends, strict=True)):
        t1 = t_end if i == len(blocks) - 1 else t1
        k = block.shape[1]
        edges.append(t0 + (t1 - t0) * (np.arange(1, k + 1) / k))
        t0 = t1
    out = np.concatenate(edges) if edges else np.zeros(0)
    return out[:n_t]


def _sample_times(ctl: PowerController, n_t: int, t_end: float) -> np.ndarray:
    ends = _sample_edges(ctl, n_t, t_end)
    starts = np.append(0.0, ends[:-1])
    return 0.5 * (starts + ends)


@dataclass(frozen=True)
class _FacilityChain:
    """Rack IT load -> rack input (distribution and PSU losses) -> job IT -> cooling and overhead -> facility,
    per sample: for the power the work requested, and with smoothing for what the GPUs drew and for the
    ramp-limited draw the grid sees."""

    rack_it_w: np.ndarray  # [T, R_types]
    rack_in_w: np.ndarray  # [T, R_types]
    rack_loss_w: np.ndarray  # [T, R_types]
    it_w: np.ndarray  # [T]
    cooling_w: np.ndarray  # [T]
    overhead_w: np.ndarray  # [T]
    facility_w: np.ndarray  # [T]
    coolant_out_c: np.ndarray  # [T, R_types]

    @classmethod
    def of(cls, ctl: PowerController, rack_it: np.ndarray, time_s: np.ndarray) -> _FacilityChain:
        p = ctl.p
        rack = p.rack
        rack_in, rack_loss = _rack_input_power(p, rack_it)
        it_w = rack_in @ ctl.rack_type_racks + ctl.fabric_w  # [T]: the racks and the job's fabric share
        fac = p.cooling.facility
        supply = np.asarray(ctl._supply_c(time_s), dtype=np.float64)
        outside = np.asarray(ctl._outside_c(time_s), dtype=np.float64)
        design_it = rack.power_limit * float(ctl.rack_type_racks.sum()) + ctl.fabric_w
        cooling_w, _pue = thermal.facility_power(
            it_w,
            supply,
            outside,
            design_it,
            fac.pump_power_fraction * design_it,
            fac.fan_power_fraction * design_it,
            fac.approach,
            max(ctl.design_rise_k, 1.0),
            fac.carnot_fraction,
            thermal.CHILLER_COP_MIN,
            thermal.CHILLER_COP_MAX,
            0.0,
            0.0,
            fac.heat_rejection == "chiller",
        )
        overhead_w = fac.other_overhead_fraction * it_w
        # the liquid carries its share of the heat: the same rise whose half the cold plates see in a tick
        coolant_out = (
            supply[:, None]
            + ctl.rack_offset_k[None, :]
            + ctl.design_rise_k * rack_it / rack.power_limit * ctl._liquid_share()
        )
        return cls(
            rack_it,
            rack_in,
            rack_loss,
            it_w,
            cooling_w,
            overhead_w,
            it_w + cooling_w + overhead_w,
            coolant_out,
        )


def _rack_input_power(p: Profile, rack_it: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[T, R]`` rack input power and conversion loss for a ``[T, R]`` IT load: distribution (busbar,
    cables; its loss depends on the instantaneous current, so per sample), then the PSU curve at the
    resulting PSU output."""
    rack = p.rack
    curve = np.asarray(rack.psu_efficiency, dtype=np.float64)
    psu_out = rack_it / power.distribution_efficiency(rack_it, rack.bus_voltage, rack.distribution_resistance)
    n_types = rack_it.shape[1]
    rack_in, psu_loss = power.rack_input_power(
        psu_out.T.copy(),
        np.full(n_types, rack.psu_rated_power),
        curve[:, 0].copy(),
        curve[:, 1].copy(),
        np.ones(n_types),
    )
    return rack_in.T, psu_loss.T + (psu_out - rack_it)


def _smoothed_gpu_power(ctl: PowerController, gpu_w: np.ndarray, sample_s: float) -> np.ndarray:
    """``[T, C]`` power of one GPU of each class under the profile's smoothing (floor and ramp limit)."""
    sm = ctl.p.rack.power_smoothing
    assert sm is not None
    n = gpu_w.shape[1]
    smoothed, _wasted = grid.gpu_smoothing(
        gpu_w.T.copy(),
        power.per_class(sm.floor_fraction * ctl.p.accelerator.tdp, n),
        power.per_class(sm.ramp_limit, n),
        sample_s,
    )
    return smoothed.T


def _grid_draw(
    ctl: PowerController, dt: np.ndarray, facility_w: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """Facility draw through the rack energy storage (when the profile has one), and its charge range."""
    es = ctl.p.rack.energy_storage
    if es is None:
        return facility_w.copy(), {"storage": None}
    racks = float(ctl.rack_type_racks.sum())
    load = (facility_w / racks)[None, :].copy()  # one representative rack's share of the facility draw
    one = lambda v: np.array([float(v)])  # noqa: E731
    grid_rack, soc = grid.storage_buffer(
        load,
        one(es.capacity),
        one(es.max_power),
        one(es.efficiency),
        one(es.grid_ramp_limit),
        one(2.0),
        one(0.5 * es.capacity),
        one(0.5 * es.capacity),
        one(60.0),
        ctl.s.sample_s,
        one(np.sum(load[0] * dt) / np.sum(dt)),  # settled at the run's mean draw, not its first sample
    )
    storage = {
        "min_soc_fraction": float(soc.min() / es.capacity),
        "max_soc_fraction": float(soc.max() / es.capacity),
    }
    return grid_rack[0] * racks, {"storage": storage}
