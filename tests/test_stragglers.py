"""Stragglers (workload `stragglers`): a GPU held below full clock breaks the job's symmetry.

The representative ranks give the GPUs in lock-step with it classes of their own; these tests hold them to
--fidelity full (every GPU simulated on its own), to the synchronous job's closed forms, and to the power
model's accounting of the slowed clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
from sim_helpers import COMPUTE_ONLY, simulate

from simcore.errors import ConfigError
from simcore.runner import RunOptions, run
from workloads.spec import load_training_spec, spec_mapping, spec_text

MOE_SMALL = {"preset": "qwen3-30b-a3b", "layers": 4}


def _spec(par: dict[str, Any], stragglers: list[dict[str, Any]] | None = None, **kw: Any) -> Any:
    data: dict[str, Any] = {
        "kind": "training",
        "model": kw.pop("model", COMPUTE_ONLY),
        "parallelism": {"recompute": "none", **par},
        "batch": {"global_seqs": kw.pop("global_seqs", 8), "micro": 1},
        "precision": kw.pop("precision", "bf16"),
        "steps": 1,
        **kw,
    }
    if stragglers is not None:
        data["stragglers"] = stragglers
    return load_training_spec(data, file="slow.yaml")


LAYOUTS = [
    pytest.param({"tp": 2, "pp": 2, "dp": 2}, 5, {}, id="tp2-pp2-dp2"),
    pytest.param({"tp": 1, "pp": 2, "dp": 4, "vp": 2}, 2, {"global_seqs": 16}, id="interleaved"),
    pytest.param({"tp": 2, "pp": 1, "dp": 2, "cp": 2}, 3, {}, id="cp2"),
    pytest.param({"tp": 2, "pp": 2, "dp": 2, "zero": 3}, 1, {}, id="zero3"),
    pytest.param(
        {"tp": 1, "pp": 2, "dp": 4, "ep": 4}, 1, {"model": MOE_SMALL, "precision": "fp8"}, id="moe-ep4"
    ),
    # rank orders: data parallelism fastest, and the pipeline inside the replicas
    pytest.param({"tp": 2, "pp": 2, "dp": 2, "order": "dp-tp-cp-ep-pp"}, 5, {}, id="order-dp-first"),
    pytest.param({"tp": 2, "pp": 2, "dp": 2, "order": "tp-pp-cp-ep-dp"}, 5, {}, id="order-pp-inner"),
    pytest.param({"tp": 2, "pp": 1, "dp": 4}, 3, {}, id="pp1"),
    pytest.param({"tp": 1, "pp": 4, "dp": 2, "vp": 2}, 7, {"global_seqs": 16}, id="last-stage-vp2"),
    pytest.param({"tp": 1, "pp": 2, "dp": 2, "layers_per_chunk": [6, 10]}, 0, {}, id="uneven-first"),
    pytest.param({"tp": 1, "pp": 1, "dp": 4, "fsdp": True}, 2, {}, id="fsdp"),
    pytest.param({"tp": 2, "pp": 2, "dp": 2, "dp_overlap": False}, 6, {}, id="no-dp-overlap"),
    pytest.param(
        {"tp": 1, "pp": 2, "dp": 2, "cp": 2, "order": "dp-cp-tp-ep-pp"}, 5, {}, id="cp2-ring-dp-first"
    ),
]


@pytest.mark.parametrize(("par", "gpu", "kw"), LAYOUTS)
def test_representative_ranks_match_full_fidelity_with_a_straggler(par, gpu, kw):
    """Classes for the straggler's lock-step pipelines give the step time of simulating every GPU."""
    spec = _spec(par, [{"gpu": gpu, "speed": 0.7}], **dict(kw))
    _, rep, t_rep = simulate(spec)
    t_full = simulate(spec, fidelity="full")[2]
    base = simulate(_spec(par, **dict(kw)))[2]
    assert t_rep == pytest.approx(t_full, rel=1e-9)
    assert t_rep > base  # the whole synchronous job waits for one slow GPU
    assert any("-slow" in c.name for c in rep.classes)  # the straggler's pipelines have classes of their own


@pytest.mark.parametrize(("par", "gpu", "kw"), LAYOUTS)
def test_a_straggler_at_full_speed_changes_nothing(par, gpu, kw):
    """The split classes (and their shared data-parallel communicators) alone do not move the step."""
    plain = simulate(_spec(par, **dict(kw)))[2]
    split = simulate(_spec(par, [{"gpu": gpu, "speed": 1.0}], **dict(kw)))[2]
    assert split == pytest.approx(plain, rel=1e-12)


def test_stragglers_in_two_replicas_and_stages_match_full_fidelity():
    """Two stragglers at different speeds, in different replicas and stages, give two sets of classes (and
    no symmetric rest where they cover every lane); the step time is still full fidelity's."""
    for par, slow in (
        ({"tp": 1, "pp": 2, "dp": 4}, [{"gpu": 0, "speed": 0.7}, {"gpu": 7, "speed": 0.8}]),
        ({"tp": 2, "pp": 2, "dp": 2}, [{"gpu": 0, "speed": 0.7}, {"gpu": 7, "speed": 0.8}]),
    ):
        spec = _spec(par, slow)
        _, rep, t_rep = simulate(spec)
        assert t_rep == pytest.approx(simulate(spec, fidelity="full")[2], rel=1e-9)
        assert {c.name for c in rep.classes} >= {"stage0-slow0", "stage0-slow1", "stage1-slow1"}


def test_one_straggler_slows_the_job_as_much_as_every_gpu_at_its_clock():
    """Data-parallel replicas meet at every gradient reduction: one replica at 0.6 of its clock sets the
    pace of the step as if both were slowed."""
    par = {"tp": 1, "pp": 1, "dp": 2}
    one = simulate(_spec(par, [{"gpu": 1, "speed": 0.6}]))[2]
    both = simulate(_spec(par, [{"gpu": 0, "speed": 0.6}, {"gpu": 1, "speed": 0.6}]))[2]
    assert one == pytest.approx(both, rel=1e-9)


def test_step_time_grows_as_the_straggler_slows_and_by_at_most_one_over_its_speed():
    """Compute-bound GEMMs take 1/speed as long, memory-bound work no longer: the step grows monotonically
    as the clock falls, by more than nothing and never by more than 1/speed."""
    par = {"tp": 1, "pp": 2, "dp": 2}
    base = simulate(_spec(par))[2]
    steps = [simulate(_spec(par, [{"gpu": 2, "speed": s}]))[2] for s in (0.9, 0.7, 0.5)]
    assert base < steps[0] < steps[1] < steps[2]
    for speed, step in zip((0.9, 0.7, 0.5), steps, strict=True):
        assert step / base <= 1.0 / speed + 1e-9


def test_lock_step_sets_follow_tp_and_expert_groups():
    """TP ties a straggler to its TP partner only; expert parallelism across replicas ties whole replicas
    (here EP 4 over dp 4: every lane of the stage), and the pipeline's other stages get classes too."""
    _, machine, _ = simulate(_spec({"tp": 2, "pp": 2, "dp": 2}, [{"gpu": 5, "speed": 0.8}]))
    sizes = {c.name: len(c.gpus) for c in machine.classes}
    assert sizes == {"stage0": 2, "stage0-slow0": 2, "stage1": 2, "stage1-slow0": 2}
    assert machine.clock_ceiling == [1.0, 1.0, 1.0, 0.8]
    moe = _spec({"tp": 1, "pp": 2, "dp": 4, "ep": 4}, [{"gpu": 1, "speed": 0.8}], model=MOE_SMALL)
    _, machine, _ = simulate(moe)
    assert sorted(c.name for c in machine.classes) == ["stage0-slow0", "stage1-slow0"]


def _run(tmp_path: Path, name: str, fidelity: str, stragglers: str) -> dict[str, Any]:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        "kind: training\nmodel: llama3-8b\nparallelism: {tp: 2, pp: 2, dp: 2}\n"
        f"batch: {{global_seqs: 8, micro: 1}}\nsteps: 1\n{stragglers}"
    )
    out = tmp_path / f"{name}-{fidelity}"
    run(RunOptions(profile="h100-dgx.yaml", workload=str(spec), out=out, fidelity=fidelity))
    return json.loads((out / "summary.json").read_text())


def test_power_model_charges_the_straggler_clock_and_names_it(tmp_path):
    """The power model holds the straggler's class at its ceiling and records why: the straggler's share of
    GPU-time below full clock is its GPUs' share (full fidelity: the one GPU; representative: it and its TP
    partner), and a slower clock draws less power than the same job with no straggler."""
    slow = "stragglers: [{gpu: 5, speed: 0.8}]\n"
    base = _run(tmp_path, "base", "representative", "")
    rep = _run(tmp_path, "slow", "representative", slow)
    full = _run(tmp_path, "slow", "full", slow)
    assert base["throttle_straggler_fraction"] == 0.0
    assert full["throttle_straggler_fraction"] == pytest.approx(1 / 8, rel=1e-9)
    assert rep["throttle_straggler_fraction"] == pytest.approx(2 / 8, rel=1e-9)
    for s in (rep, full):
        assert s["throttle_time_fraction"] == pytest.approx(s["throttle_straggler_fraction"], rel=1e-12)
        assert s["throttle_cause"] == "straggler"
        assert s["min_clock_factor"] == pytest.approx(0.8)
        assert s["avg_it_power_w"] < base["avg_it_power_w"]
    assert rep["step_time_s"] == pytest.approx(full["step_time_s"], rel=1e-9)
    with h5py.File(tmp_path / "slow-full" / "trace.h5") as f:
        cause = f["timeseries/thermal/clock_cause"][:]
        clock = f["timeseries/thermal/clock_factor"][:]
    assert np.all(cause[:, 5] == 4) and np.all(clock[:, 5] == pytest.approx(0.8))
    assert not np.any(np.delete(cause, 5, axis=1))


@pytest.mark.parametrize(
    ("stragglers", "path", "match"),
    [
        ([{"gpu": 8, "speed": 0.8}], r"stragglers\[0\]\.gpu", "no such GPU"),
        ([{"gpu": 1, "speed": 0}], r"stragglers\[0\]\.speed", "out of range"),
        ([{"gpu": 1, "speed": 1.5}], r"stragglers\[0\]\.speed", "out of range"),
        ([{"gpu": 1, "speed": 0.5}, {"gpu": 1, "speed": 0.7}], r"stragglers\[1\]\.gpu", "already"),
        ([{"gpu": 1}], r"stragglers\[0\]\.speed", "missing"),
    ],
)
def test_bad_stragglers_name_the_entry(stragglers, path, match):
    with pytest.raises(ConfigError, match=match) as err:
        _spec({"tp": 2, "pp": 2, "dp": 2}, stragglers)
    assert "slow.yaml" in str(err.value)
    assert path.replace("\\", "") in str(err.value)


def test_stragglers_survive_the_effective_spec():
    """The spec stored in the trace reloads to the same stragglers; none means no key at all."""
    spec = _spec({"tp": 2, "pp": 2, "dp": 2}, [{"gpu": 3, "speed": 0.75}])
    assert spec_mapping(spec)["stragglers"] == [{"gpu": 3, "speed": 0.75}]
    again = load_training_spec(spec_mapping(spec), file="again.yaml")
    assert again.stragglers == spec.stragglers
    assert "stragglers" not in spec_text(_spec({"tp": 2, "pp": 2, "dp": 2}))
    assert _spec({"tp": 2, "pp": 2, "dp": 2}, []).stragglers == ()


def test_notes_name_the_clock_each_straggler_is_charged():
    """A straggler's note says how many GPUs share its class's clock (one partner: singular), and a faster
    straggler in lock-step with a slower one is charged the slower one's clock, which its note says."""
    job, machine, _ = simulate(_spec({"tp": 2, "pp": 2, "dp": 2}, [{"gpu": 5, "speed": 0.8}]))
    (note,) = job.straggler_notes()
    assert "the other GPU of its stage" in note and " is charged its clock" in note
    pair = [{"gpu": 0, "speed": 0.7}, {"gpu": 1, "speed": 0.9}]  # one TP group: one class at 0.7
    job, machine, _ = simulate(_spec({"tp": 2, "pp": 2, "dp": 2}, pair))
    slow, fast = job.straggler_notes()
    assert min(machine.clock_ceiling) == pytest.approx(0.7)
    assert "charged its clock" in slow
    assert fast.startswith("straggler: GPU 1 runs at 0.9 of max clock") and "charged 0.7" in fast
    job, _, _ = simulate(_spec({"tp": 4, "pp": 1, "dp": 2}, [{"gpu": 1, "speed": 0.8}]))
    assert "the 3 other GPUs of its stage" in job.straggler_notes()[0]
    assert " are charged its clock" in job.straggler_notes()[0]


def test_a_blank_or_mistyped_stragglers_list():
    """`stragglers:` left blank in YAML (its entries commented out) means none, as `[]` does, and the JSON
    schema allows it too; a single mapping where the list belongs is refused as "must be a list" (an empty
    list is fine, so "non-empty" would mislead), naming the field."""
    from workloads.spec_schema import workload_json_schema

    data = yaml.safe_load("stragglers:\n#  - {gpu: 3, speed: 0.8}\n")
    assert data == {"stragglers": None}
    spec = load_training_spec({**spec_mapping(_spec({"tp": 2, "pp": 2, "dp": 2})), **data}, file="blank.yaml")
    assert spec.stragglers == ()
    with pytest.raises(ConfigError, match="must be a list;") as err:
        _spec({"tp": 2, "pp": 2, "dp": 2}, {"gpu": 1, "speed": 0.5})  # type: ignore[arg-type]
    assert "stragglers" in str(err.value) and "non-empty" not in str(err.value)
    schema = json.dumps(workload_json_schema())
    assert '"stragglers": {"type": ["array", "null"]' in schema


def test_a_straggler_below_the_lowest_clock_is_refused(tmp_path):
    """The ceiling must be a clock the accelerator has (the DVFS power curve ends at min_clock)."""
    spec = tmp_path / "slow.yaml"
    spec.write_text(
        "kind: training\nmodel: llama3-8b\nparallelism: {tp: 2, pp: 2, dp: 2}\n"
        "batch: {global_seqs: 8, micro: 1}\nsteps: 1\nstragglers: [{gpu: 1, speed: 0.05}]\n"
    )
    with pytest.raises(ConfigError, match=r"stragglers\[0\]\.speed.*lowest clock") as err:
        run(RunOptions(profile="h100-dgx.yaml", workload=str(spec), out=tmp_path / "out"))
    assert "slow.yaml" in str(err.value) and "min_clock" in str(err.value)
    assert not (tmp_path / "out").exists()
