"""``racksim export-perfetto TRACE``: Chrome trace-event JSON that the Perfetto UI (and chrome://tracing) opens.

One process per rank class, named by its place (``pod0/rack03/tray05/gpu2 stage3``); one thread per stream
(``compute``, ``tp``, ``pp_send`` ...); a complete (``X``) event per op with bytes, FLOPs, group and op in
``args``; flow arrows (``s``/``f``) from each pipeline send to its receive; counter (``C``) tracks for GPU
power, junction temperature and clock per class, and for IT / facility / grid / rack power and coolant
when the trace has those series. Timestamps are microseconds.

The JSON is written as the events are read, block by block, so memory stays bounded; the file appears
atomically when complete. Large traces are limited to a few steps (``--steps``) or classes (``--ranks``):
the UI keeps the whole JSON in the browser's memory.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from simcore.activity import KIND_COMPUTE, KIND_RECV, KIND_SEND
from simcore.atomic import atomic_path
from simcore.errors import ConfigError
from simcore.trace import Series, Trace
from simcore.wording import plural

DEFAULT_MAX_EVENTS = 1_000_000
DEFAULT_MAX_COUNTER_SAMPLES = 20_000
EXPORT_FIELDS = (
    "rank_class",
    "stream",
    "kind",
    "group",
    "op",
    "name",
    "step",
    "micro",
    "t_start",
    "t_end",
    "flops",
    "nbytes",
)
NS = 1e9  # seconds -> integer nanoseconds, written as microseconds with 3 decimals


@dataclass
class ExportResult:
    """What was written, and any notes for the user (e.g. the automatic step limit)."""

    path: Path
    events: int = 0
    flows: int = 0
    counters: int = 0
    steps: tuple[int, int] | None = None
    classes: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- selection


def parse_ranks(spec: str | None, class_names: Sequence[str]) -> list[int] | None:
    """``"0,2,5-7"`` or class names (``"stage0,stage3"``) -> sorted class indices; None means all."""
    if spec is None or spec.strip() in ("", "all"):
        return None
    n = len(class_names)
    by_name = {name: i for i, name in enumerate(class_names)}
    out: set[int] = set()
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if token in by_name:
            out.add(by_name[token])
            continue
        try:
            if "-" in token:
                a, b = (int(x) for x in token.split("-", 1))
                picked = range(a, b + 1)
            else:
                picked = range(int(token), int(token) + 1)
        except ValueError:
            raise ConfigError(
                "unknown rank class",
                path="--ranks",
                value=token,
                expected=f"class indices 0..{n - 1}, ranges like 2-5, or names such as {', '.join(class_names[:3])}",
            ) from None
        bad = [i for i in picked if not 0 <= i < n]
        if bad or not picked:
            raise ConfigError(
                "rank class out of range", path="--ranks", value=token, expected=f"indices 0..{n - 1}"
            )
        out.update(picked)
    if not out:  # `--ranks ,`: a slip, not "no classes" (an empty timeline)
        raise ConfigError("no rank class given", path="--ranks", value=spec,
                          expected=f"class indices 0..{n - 1}, ranges like 2-5, class names, or all")  # fmt: skip
    return sorted(out)


def _asked_last_step(spec: str | int | None) -> int | None:
    """The last step a --steps value asked for (N -> N-1, A-B -> B), before clipping; None if none."""
    text = str(spec).strip() if spec is not None else ""
    try:
        return int(text) - 1 if text.isdigit() else int(text.split("-", 1)[1]) if "-" in text else None
    except ValueError:
        return None


def parse_steps(spec: str | int | None, n_steps: int) -> tuple[int, int] | None:
    """``N`` (the first N steps) or ``A-B`` (steps A..B, 0-based, inclusive) -> [first, last]."""
    if spec is None:
        return None
    text = str(spec).strip()
    if text == "all":
        return None
    try:
        if "-" in text:
            a, b = (int(x) for x in text.split("-", 1))
        else:
            a, b = 0, int(text) - 1
    except ValueError:
        raise ConfigError("bad step selection", path="--steps", value=text, expected="N or A-B") from None
    if n_steps and (a < 0 or b < a or a >= n_steps):
        raise ConfigError(
            "step selection outside the trace",
            path="--steps",
            value=text,
            expected=f"N >= 1 (the first N of the trace's {n_steps} steps), or A-B starting within "
            f"0..{n_steps - 1} (B beyond the last step means up to it)",
        )
    return a, min(b, n_steps - 1) if n_steps else b


# ---------------------------------------------------------------------------------------------- JSON


def _tid(rank_class: int, stream: int) -> int:
    """Thread id of a stream: unique across processes and never equal to a pid (the UI would call a
    thread whose tid equals its pid the "main thread")."""
    return (rank_class + 1) * 1000 + stream + 1


def _ns(seconds: np.ndarray) -> list[int]:
    """Times as integer nanoseconds: end - start of rounded values, so back-to-back ops never overlap."""
    return np.rint(np.asarray(seconds, dtype=np.float64) * NS).astype(np.int64).tolist()


def _us(ns: int) -> str:
    """Integer nanoseconds as a JSON number of microseconds (exact: no float rounding in the text)."""
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    return f"{sign}{ns // 1000}.{ns % 1000:03d}"


def _g(x: float) -> str:
    """A float as JSON (shortest exact repr); NaN and infinities are not JSON, so they become null."""
    return repr(float(x)) if math.isfinite(x) else "null"


class _Writer:
    """Appends pre-formatted events to the ``traceEvents`` array (comma bookkeeping in one place)."""

    def __init__(self, fh: IO[str]) -> None:
        self.fh = fh
        self.first = True
        self.count = 0

    def raw(self, items: list[str]) -> None:
        if not items:
            return
        sep = ",\n"
        self.fh.write(("" if self.first else sep) + sep.join(items))
        self.first = False
        self.count += len(items)


def _metadata(
    tr: Trace, classes: list[int], seen: set[tuple[int, int]], facility_pid: int | None
) -> list[str]:
    """``M`` events: process names (place + class) and sort order, thread names of the streams seen."""
    out: list[dict[str, Any]] = []
    for c in classes:
        place = tr.class_places[c]
        label = f"{place} {tr.class_names[c]}".strip()
        mult = int(tr.multiplicity[c]) if c < len(tr.multiplicity) else 1
        if mult > 1:
            label += f" (x{mult} GPUs)"
        out.append({"name": "process_name", "ph": "M", "pid": c + 1, "tid": 0, "args": {"name": label}})
        out.append(
            {"name": "process_sort_index", "ph": "M", "pid": c + 1, "tid": 0, "args": {"sort_index": c}}
        )
    for c, s in sorted(seen):
        out.append(
            {
                "name": "thread_name",
                "ph": "M",
                "pid": c + 1,
                "tid": _tid(c, s),
                "args": {"name": tr.stream_name(s)},
            }
        )
        out.append(
            {
                "name": "thread_sort_index",
                "ph": "M",
                "pid": c + 1,
                "tid": _tid(c, s),
                "args": {"sort_index": s},
            }
        )
    if facility_pid is not None:
        out.append(
            {
                "name": "process_name",
                "ph": "M",
                "pid": facility_pid,
                "tid": 0,
                "args": {"name": "cluster power and cooling"},
            }
        )
        out.append(
            {
                "name": "process_sort_index",
                "ph": "M",
                "pid": facility_pid,
                "tid": 0,
                "args": {"sort_index": -1},
            }
        )
    return [json.dumps(e, separators=(",", ":")) for e in out]


def _x_events(
    tr: Trace, block: np.ndarray, names: list[str], cats: list[list[str]], groups: list[str], ops: list[str]
) -> list[str]:
    """``X`` events for one block (a Python loop over plain lists: the cheapest way to format JSON)."""
    cls = block["rank_class"].tolist()
    stream = block["stream"].tolist()
    kind = block["kind"].tolist()
    group = block["group"].tolist()
    op = block["op"].tolist()
    name = block["name"].tolist()
    step = block["step"].tolist()
    micro = block["micro"].tolist()
    ts = _ns(block["t_start"])
    end = _ns(block["t_end"])
    flops = block["flops"].tolist()
    nbytes = block["nbytes"].tolist()
    n_names = len(names)
    out: list[str] = []
    append = out.append
    for c, s, k, g, o, nm, st, mi, t, te, fl, nb in zip(
        cls, stream, kind, group, op, name, step, micro, ts, end, flops, nbytes, strict=True
    ):
        label = names[nm] if 0 <= nm < n_names else f'"op{nm}"'
        d = max(te - t, 0)
        if k == KIND_COMPUTE:
            args = f'"flops":{_g(fl)},"bytes":{_g(nb)}'
        else:
            bw = nb / d if d > 0 else 0.0  # B/ns = GB/s
            args = f'"bytes":{_g(nb)},"algbw_GBps":{bw:.4g}'
        append(
            f'{{"name":{label},"cat":"{cats[k][g]}","ph":"X","ts":{_us(t)},"dur":{_us(d)},"pid":{c + 1},'
            f'"tid":{_tid(c, s)},"args":{{{args},"group":"{groups[g]}","op":"{ops[o]}","step":{st},"micro":{mi}}}}}'
        )
    return out


def _lookup(names: Sequence[str], i: int) -> str:
    return names[i] if 0 <= i < len(names) else str(i)


# ---------------------------------------------------------------------------------------------- counters


def _sample_spans(series: Series, widths_s: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of each sample. A series' time is the sample's midpoint, but a counter event holds its
    value from its timestamp until the next one, so counters are stamped at the sample's start (at the
    midpoint every counter lagged the ops by half a sample, 2.5 ms). ``widths_s``: another group's widths on
    the same time axis (the thermal group stores none)."""
    w = widths_s if widths_s is not None and len(widths_s) == len(series.time_s) else series.weights_s()
    start = series.time_s - 0.5 * w
    return start, start + w


def _decimate(
    spans: tuple[np.ndarray, np.ndarray], values: np.ndarray, lo: float, hi: float, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Samples overlapping [lo, hi] as (start time, value), the first one starting at ``lo`` at the earliest,
    thinned to at most ``limit`` (max-preserving) with repeats dropped."""
    start, end = spans
    keep = (end > lo) & (start <= hi)
    t, v = np.maximum(start[keep], lo), values[keep]
    if len(t) > limit > 0:
        stride = -(-len(t) // limit)
        n = len(t) // stride * stride
        # keep each bin's peak so power spikes survive thinning
        vb = v[:n].reshape(-1, stride)
        idx = np.arange(0, n, stride) + np.argmax(vb, axis=1)
        t, v = np.append(t[idx], t[n:][-1:]), np.append(v[idx], v[n:][-1:])
    if len(v) > 2:
        change = np.ones(len(v), dtype=bool)
        change[1:-1] = v[1:-1] != v[:-2]
        t, v = t[change], v[change]
    return t, v


def _counter_events(pid: int, name: str, key: str, t: np.ndarray, v: np.ndarray) -> list[str]:
    """``C`` events of one track; the UI names the track "<name> <key>", so the key is the unit."""
    label = json.dumps(name)
    return [
        f'{{"name":{label},"ph":"C","ts":{_us(ts)},"pid":{pid},"tid":0,"args":{{"{key}":{_g(x)}}}}}'
        for ts, x in zip(_ns(t), v.tolist(), strict=True)
        if math.isfinite(x)
    ]


def _counters(
    tr: Trace, classes: list[int], lo: float, hi: float, limit: int, facility_pid: int
) -> Iterator[list[str]]:
    """Counter tracks per class (GPU power, temperature, clock) and for the facility process."""
    power: Series | None = tr.series("power")
    thermal: Series | None = tr.series("thermal")
    spans = {"power": _sample_spans(power) if power is not None else None, "thermal": None}
    if thermal is not None:
        same_axis = power is not None and np.array_equal(power.time_s, thermal.time_s)
        spans["thermal"] = _sample_spans(thermal, power.weights_s() if same_axis and power else None)

    def span_of(series: Series) -> tuple[np.ndarray, np.ndarray]:
        got = spans["power"] if series is power else spans["thermal"]
        assert got is not None
        return got

    per_class = (
        (power, "gpu_w", "GPU power", "W", 1.0),
        (thermal, "t_junction_c", "junction temperature", "degC", 1.0),
        (thermal, "clock_factor", "clock factor", "f/fmax", 1.0),
    )
    for series, key, label, unit, scale in per_class:
        data = series.get(key) if series is not None else None
        if series is None or data is None or data.ndim != 2:
            continue
        for c in classes:
            if c < data.shape[1]:
                t, v = _decimate(span_of(series), data[:, c] * scale, lo, hi, limit)
                yield _counter_events(c + 1, label, unit, t, v)
    facility = (
        (power, "it_w", "IT power", "kW", 1e-3),
        (power, "facility_w", "facility power", "kW", 1e-3),
        (power, "grid_w", "grid power", "kW", 1e-3),
    )
    for series, key, label, unit, scale in facility:
        data = series.get(key) if series is not None else None
        if series is not None and data is not None and data.ndim == 1:
            t, v = _decimate(span_of(series), data * scale, lo, hi, limit)
            yield _counter_events(facility_pid, label, unit, t, v)
    for series, key, label, unit, scale in (
        (power, "rack_w", "rack type {} input power", "kW", 1e-3),
        (thermal, "coolant_out_c", "rack type {} coolant out", "degC", 1.0),
    ):
        data = series.get(key) if series is not None else None
        if series is not None and data is not None and data.ndim == 2:
            for r in range(data.shape[1]):
                t, v = _decimate(span_of(series), data[:, r] * scale, lo, hi, limit)
                yield _counter_events(facility_pid, label.format(r), unit, t, v)


def has_counters(tr: Trace) -> bool:
    return tr.series("power") is not None or tr.series("thermal") is not None


# ---------------------------------------------------------------------------------------------- export


def export_perfetto(
    trace_path: str | Path,
    out: str | Path | None = None,
    *,
    steps: str | int | None = None,
    ranks: str | Sequence[int] | None = None,
    max_events: int = DEFAULT_MAX_EVENTS,
    counters: bool = True,
    max_counter_samples: int = DEFAULT_MAX_COUNTER_SAMPLES,
) -> ExportResult:
    """Write ``trace_path`` as Chrome trace-event JSON (``.json`` or ``.json.gz``); see module docstring."""
    trace_path = Path(trace_path)
    out_path = Path(out) if out is not None else trace_path.with_name(trace_path.stem + ".perfetto.json")
    with Trace(trace_path) as tr:
        result = ExportResult(out_path)
        if isinstance(ranks, str) or ranks is None:
            selected = parse_ranks(ranks, tr.class_names)
        else:
            selected = sorted(set(int(r) for r in ranks))
        classes = selected if selected is not None else list(range(tr.n_classes))
        n_steps = len(tr.step_ends)
        step_sel = parse_steps(steps, n_steps)
        asked = _asked_last_step(steps)
        if step_sel is not None and n_steps and asked is not None and asked > step_sel[1]:
            result.notes.append(
                f"--steps {steps}: the trace has {plural(n_steps, 'step')}; exporting steps {step_sel[0]}-{step_sel[1]}"
            )
        if step_sel is None and steps is None and n_steps and tr.n_events > max_events:
            share = len(classes) / max(1, tr.n_classes)
            per_step = tr.n_events * share / n_steps
            k = max(1, int(max_events // max(per_step, 1.0)))
            if k < n_steps:
                step_sel = (0, k - 1)
                result.notes.append(
                    f"the trace has {tr.n_events} events; exporting the first {k} of {n_steps} steps "
                    f"(use --steps or --ranks to choose, --steps all for everything)"
                )
        t_lo = t_hi = None
        if step_sel is not None and n_steps:
            bounds = tr.step_bounds
            t_lo, t_hi = bounds[step_sel[0]][0], bounds[step_sel[1]][1]
            result.steps = step_sel
        result.classes = classes
        with atomic_path(out_path) as tmp:
            opener = gzip.open if out_path.suffix == ".gz" else open
            with opener(tmp, "wt", encoding="utf-8") as fh:
                _write_json(tr, fh, result, classes, selected, t_lo, t_hi, counters, max_counter_samples)
    return result


def _write_json(
    tr: Trace,
    fh: IO[str],
    result: ExportResult,
    classes: list[int],
    selected: list[int] | None,
    t_lo: float | None,
    t_hi: float | None,
    counters: bool,
    max_counter_samples: int,
) -> None:
    names = [json.dumps(n) for n in tr.names]
    groups = list(tr.group_names)
    ops = list(tr.op_names)
    kinds = list(tr.kind_names)
    cats = [
        [kinds[k] if k == KIND_COMPUTE else f"{kinds[k]},{groups[g]}" for g in range(len(groups))]
        for k in range(len(kinds))
    ]
    n_streams = 1 << 16  # stream is int16: class * 2**16 + stream is a unique key
    fh.write('{"traceEvents":[\n')
    w = _Writer(fh)
    seen_keys: set[int] = set()
    sends: list[np.ndarray] = []
    recvs: list[np.ndarray] = []
    t_min, t_max = math.inf, -math.inf
    for block in tr.iter_events(t_lo=t_lo, t_hi=t_hi, classes=selected, fields=EXPORT_FIELDS):
        w.raw(_x_events(tr, block, names, cats, groups, ops))
        result.events += len(block)
        key = block["rank_class"].astype(np.int64) * n_streams + block["stream"]
        seen_keys.update(np.unique(key).tolist())
        sends.append(block[block["kind"] == KIND_SEND])
        recvs.append(block[block["kind"] == KIND_RECV])
        t_min = min(t_min, float(block["t_start"].min()))
        t_max = max(t_max, float(block["t_end"].max()))
    if seen_keys:  # a trace without class tables: name the classes the events use
        tr.ensure_classes(max(seen_keys) // n_streams + 1)
        if selected is None:
            classes = list(range(tr.n_classes))
            result.classes = classes
    flows = _flows(np.concatenate(sends) if sends else None, np.concatenate(recvs) if recvs else None, groups)
    w.raw(flows)
    result.flows = len(flows) // 2
    facility_pid = tr.n_classes + 1
    want_counters = counters and has_counters(tr)
    if want_counters:
        lo = t_lo if t_lo is not None else (t_min if math.isfinite(t_min) else 0.0)
        hi = t_hi if t_hi is not None else (t_max if math.isfinite(t_max) else math.inf)
        before = w.count
        for items in _counters(tr, classes, lo, hi, max_counter_samples, facility_pid):
            w.raw(items)
        result.counters = w.count - before
    seen = {(k // n_streams, k % n_streams) for k in seen_keys}
    w.raw(_metadata(tr, classes, seen, facility_pid if want_counters else None))
    other = {
        "source": str(tr.path),
        "generator": "racksim export-perfetto",
        "racksim_version": tr.attrs.get("racksim_version"),
        "profile": tr.attrs.get("profile_name"),
        "workload": tr.attrs.get("workload_name"),
        "fidelity": tr.attrs.get("fidelity"),
        "steps": None if result.steps is None else list(result.steps),
        "classes": "all" if selected is None else selected,
        "time_unit": "us",
    }
    fh.write('\n],\n"displayTimeUnit":"ms",\n"otherData":')
    fh.write(json.dumps(other, default=str))
    fh.write("}\n")


def _flows(sends: np.ndarray | None, recvs: np.ndarray | None, groups: Sequence[str]) -> list[str]:
    """``s``/``f`` pairs from each send to the receive with the same name, step, micro-batch and times."""
    if sends is None or recvs is None or len(sends) == 0 or len(recvs) == 0:
        return []
    pending: dict[tuple[Any, ...], list[int]] = {}
    for i, row in enumerate(
        zip(
            recvs["name"].tolist(),
            recvs["step"].tolist(),
            recvs["micro"].tolist(),
            recvs["t_start"].tolist(),
            recvs["t_end"].tolist(),
            strict=True,
        )
    ):
        pending.setdefault(row, []).append(i)
    out: list[str] = []
    flow_id = 0
    keys = zip(
        sends["name"].tolist(),
        sends["step"].tolist(),
        sends["micro"].tolist(),
        sends["t_start"].tolist(),
        sends["t_end"].tolist(),
        strict=True,
    )
    for i, key in enumerate(keys):
        hits = pending.get(key)
        if not hits:
            continue
        j = hits.pop(0)
        flow_id += 1
        a, b = _ns(np.array([key[3], key[4]]))
        mid = _us(a + (b - a) // 2)
        s, r = sends[i], recvs[j]
        label = json.dumps(f"{_lookup(groups, int(s['group']))} send")
        out.append(
            f'{{"name":{label},"cat":"flow","ph":"s","id":{flow_id},"ts":{mid},"pid":{int(s["rank_class"]) + 1},'
            f'"tid":{_tid(int(s["rank_class"]), int(s["stream"]))}}}'
        )
        out.append(
            f'{{"name":{label},"cat":"flow","ph":"f","bp":"e","id":{flow_id},"ts":{mid},'
            f'"pid":{int(r["rank_class"]) + 1},"tid":{_tid(int(r["rank_class"]), int(r["stream"]))}}}'
        )
    return out


def run_export(
    trace_path: str | Path,
    out: str | Path | None = None,
    *,
    steps: str | None = None,
    ranks: str | None = None,
    max_events: int = DEFAULT_MAX_EVENTS,
    counters: bool = True,
) -> ExportResult:
    """CLI body: export and print where the file went."""
    import sys

    result = export_perfetto(
        trace_path, out, steps=steps, ranks=ranks, max_events=max_events, counters=counters
    )
    for note in result.notes:
        print(f"racksim: {note}", file=sys.stderr)
    with contextlib.suppress(OSError):
        size = result.path.stat().st_size
        print(
            f"wrote {result.path} ({size / 1e6:.1f} MB): {result.events} slices, {result.flows} flows, "
            f"{result.counters} counter samples; open it at https://ui.perfetto.dev"
        )
    return result
