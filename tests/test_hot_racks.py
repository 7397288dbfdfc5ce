"""Hot racks (workload `hot_racks`): a rack whose coolant arrives warmer than the supply.

Its GPUs run hotter and, past the slowdown temperature, throttle; the synchronous job waits for them. The
representative ranks give the GPUs in lock-step with them classes of their own, so these tests hold them
to --fidelity full (every GPU simulated on its own, in its own rack's heat), and the thermal model to its
own statements: the offset adds to the hot rack's coolant and nowhere else, hotter is never faster.

The racks are gen2's with two trays (8 GPUs a rack) so that a 16-GPU job spans two of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml

from simcore.errors import ConfigError
from simcore.runner import RunOptions, run
from workloads.spec import load_training_spec, spec_mapping, spec_text

SMALL_RACKS = ["rack.trays_per_rack=2"]  # gen2: 8 GPUs per rack
MODEL = {"preset": "llama3-8b", "layers": 8}


def _workload(tmp_path: Path, name: str, par: dict[str, Any], hot: list[dict[str, Any]] | None) -> Path:
    data: dict[str, Any] = {
        "kind": "training",
        "model": MODEL,
        "parallelism": par,
        "batch": {"global_seqs": 16, "micro": 1},
        "steps": 1,
    }
    if hot is not None:
        data["hot_racks"] = hot
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(
    tmp_path: Path,
    name: str,
    hot: list[dict[str, Any]] | None,
    par: dict[str, Any] | None = None,
    fidelity: str = "representative",
) -> dict[str, Any]:
    par = par or {"tp": 2, "pp": 2, "dp": 4, "order": "tp-pp-cp-ep-dp"}
    spec = _workload(tmp_path, name, par, hot)
    out = tmp_path / f"{name}-{fidelity}"
    run(RunOptions(profile="gen2.yaml", workload=str(spec), out=out, fidelity=fidelity, sets=SMALL_RACKS))
    return json.loads((out / "summary.json").read_text())


LAYOUTS = [
    # replicas inside racks: rack 1 holds two whole replicas (both stages)
    pytest.param({"tp": 2, "pp": 2, "dp": 4, "order": "tp-pp-cp-ep-dp"}, id="replicas-in-racks"),
    # the pipeline outermost: rack 1 holds stage 1 of every replica
    pytest.param({"tp": 2, "pp": 2, "dp": 4}, id="stage-per-rack"),
    pytest.param({"tp": 4, "pp": 1, "dp": 4}, id="pp1"),
]


@pytest.mark.parametrize("par", LAYOUTS)
def test_representative_ranks_match_full_fidelity_with_a_hot_rack(tmp_path, par):
    """The hot rack throttles (50 K above the supply takes its junctions past the slowdown temperature):
    the representative classes give the step time, the throttling and the energy of simulating every GPU
    in its own rack's heat."""
    hot = [{"rack": 1, "supply_offset": "50 K"}]
    rep = _run(tmp_path, "hot", hot, par)
    full = _run(tmp_path, "hot", hot, par, fidelity="full")
    base = _run(tmp_path, "base", None, par)
    assert rep["throttle_thermal_fraction"] > 0.0  # the case tests something: heat sets clocks
    assert rep["step_time_s"] > base["step_time_s"]
    assert rep["step_time_s"] == pytest.approx(full["step_time_s"], rel=1e-9)
    assert rep["throttle_thermal_fraction"] == pytest.approx(full["throttle_thermal_fraction"], rel=1e-6)
    assert rep["max_junction_temp_c"] == pytest.approx(full["max_junction_temp_c"], rel=1e-9)
    assert rep["energy_per_token_j"] == pytest.approx(full["energy_per_token_j"], rel=1e-3)


def test_a_zero_offset_changes_nothing(tmp_path):
    """A hot rack 0 K above the supply is the job without one: every summary number is the same."""
    base = _run(tmp_path, "base", None)
    zero = _run(tmp_path, "zero", [{"rack": 1, "supply_offset": "0 K"}])
    skip = {"wall_time_s", "inputs"}
    assert {k: v for k, v in zero.items() if k not in skip} == {
        k: v for k, v in base.items() if k not in skip
    }


def test_hotter_is_never_faster_and_only_the_hot_rack_warms(tmp_path):
    """The step time never falls and the hottest junction rises as the offset grows; below the slowdown
    temperature the step is the base job's. The offset adds to the hot rack's coolant outlet, exactly,
    while the other rack's stays where it was."""
    base = _run(tmp_path, "base", None)
    runs = {k: _run(tmp_path, f"hot{k}", [{"rack": 1, "supply_offset": f"{k} K"}]) for k in (20, 40, 50)}
    steps = [base["step_time_s"], *(runs[k]["step_time_s"] for k in (20, 40, 50))]
    hottest = [base["max_junction_temp_c"], *(runs[k]["max_junction_temp_c"] for k in (20, 40, 50))]
    assert steps == sorted(steps) and steps[-1] > steps[0]
    assert hottest == sorted(hottest) and len(set(hottest)) == len(hottest)
    assert runs[20]["step_time_s"] == base["step_time_s"]  # 69 degC: far below the 87 degC slowdown
    assert runs[20]["throttle_time_fraction"] == 0.0
    assert runs[20]["max_coolant_out_c"] == pytest.approx(base["max_coolant_out_c"] + 20.0, abs=1e-9)
    with (
        h5py.File(tmp_path / "base-representative" / "trace.h5") as f0,
        h5py.File(tmp_path / "hot20-representative" / "trace.h5") as f1,
    ):
        out0 = f0["timeseries/thermal/coolant_out_c"][:]
        out1 = f1["timeseries/thermal/coolant_out_c"][:]
    assert out0.shape[1] == 1 and out1.shape[1] == 2  # the hot rack is a rack type of its own
    n = min(len(out0), len(out1))
    cool, hot = np.sort(out1[:n], axis=1).T
    assert np.allclose(cool, out0[:n, 0], atol=1e-9)
    assert np.allclose(hot - cool, 20.0, atol=1e-9)


def test_hot_rack_classes_follow_the_racks(tmp_path):
    """With the replicas inside racks, rack 1's two replicas (8 GPUs, both stages) get classes of their
    own; with the pipeline outermost, rack 1 holds stage 1 of every replica, and the classes stay one per
    stage (every lane reaches the hot rack)."""
    from sim_helpers import simulate

    def classes(par: dict[str, Any]) -> dict[str, int]:
        spec = load_training_spec(
            {
                "kind": "training",
                "model": MODEL,
                "parallelism": par,
                "batch": {"global_seqs": 16, "micro": 1},
                "steps": 1,
                "hot_racks": [{"rack": 1, "supply_offset": "10 K"}],
            },
            file="hot.yaml",
        )
        _, machine, _ = simulate(spec, profile="gen2.yaml", sets=tuple(SMALL_RACKS))
        assert machine.rack_supply_offset == {1: 10.0}
        return {c.name: len(c.gpus) for c in machine.classes}

    inside = classes({"tp": 2, "pp": 2, "dp": 4, "order": "tp-pp-cp-ep-dp"})
    assert inside == {"stage0": 4, "stage0-hot0": 4, "stage1": 4, "stage1-hot0": 4}
    assert classes({"tp": 2, "pp": 2, "dp": 4}) == {"stage0-hot0": 8, "stage1-hot0": 8}


def test_an_overheating_hot_rack_names_its_entry(tmp_path):
    """An offset the GPUs cannot survive even at min_clock is the workload's error, not the profile's."""
    spec = _workload(tmp_path, "melt", {"tp": 2, "pp": 2, "dp": 4}, [{"rack": 1, "supply_offset": "80 K"}])
    with pytest.raises(ConfigError, match="would overheat") as err:
        run(RunOptions(profile="gen2.yaml", workload=str(spec), out=tmp_path / "o", sets=SMALL_RACKS))
    assert "melt.yaml" in str(err.value) and "hot_racks[0].supply_offset" in str(err.value)
    assert not (tmp_path / "o" / "trace.h5").exists()


@pytest.mark.parametrize(
    ("hot", "path", "match"),
    [
        ([{"rack": 2, "supply_offset": "5 K"}], r"hot_racks[0].rack", "no such rack"),
        ([{"rack": 1, "supply_offset": "-5 K"}], r"hot_racks[0].supply_offset", "must not be negative"),
        ([{"rack": 1, "supply_offset": "5 W"}], r"hot_racks[0].supply_offset", "temperature difference"),
        ([{"rack": 1}], r"hot_racks[0].supply_offset", "missing"),
        (
            [{"rack": 1, "supply_offset": "5 K"}, {"rack": 1, "supply_offset": "9 K"}],
            r"hot_racks[1].rack",
            "already",
        ),
    ],
)
def test_bad_hot_racks_name_the_entry(tmp_path, hot, path, match):
    spec = _workload(tmp_path, "badhot", {"tp": 2, "pp": 2, "dp": 4}, hot)
    with pytest.raises(ConfigError, match=match) as err:
        run(RunOptions(profile="gen2.yaml", workload=str(spec), out=tmp_path / "o", sets=SMALL_RACKS))
    assert "badhot.yaml" in str(err.value)
    assert path in str(err.value)


def test_hot_racks_survive_the_effective_spec():
    """The spec stored in the trace reloads to the same hot racks; none means no key at all."""
    data = {
        "kind": "training",
        "model": MODEL,
        "parallelism": {"tp": 2, "pp": 2, "dp": 4},
        "batch": {"global_seqs": 16, "micro": 1},
        "hot_racks": [{"rack": 1, "supply_offset": "12.5 K"}],
    }
    spec = load_training_spec(data, file="hot.yaml")
    assert spec.hot_racks[0].supply_offset == pytest.approx(12.5)
    again = load_training_spec(spec_mapping(spec), file="again.yaml")
    assert again.hot_racks == spec.hot_racks
    del data["hot_racks"]
    assert "hot_racks" not in spec_text(load_training_spec(data, file="cool.yaml"))


def test_a_class_spanning_a_cool_and_a_hot_rack_throttles_only_its_hot_gpus(tmp_path):
    """Expert parallelism over both racks ties every lane together, so one class per stage holds the cool
    rack's GPUs and the hot rack's. The cool ones run at their own rack's heat (67 degC, full clock) and
    wait, as in --fidelity full: the throttled share is the hot rack's GPUs' (half the job), not the class's
    (all of it), and the cool GPUs do not start at the hot rack's temperature."""
    par = {"tp": 1, "pp": 1, "dp": 16, "ep": 16}
    hot = [{"rack": 1, "supply_offset": "50 K"}]
    model = {"preset": "qwen3-30b-a3b", "layers": 4}

    def go(fidelity: str) -> dict[str, Any]:
        data = {
            "kind": "training",
            "model": model,
            "parallelism": par,
            "batch": {"global_seqs": 16, "micro": 1},
            "steps": 1,
            "hot_racks": hot,
        }
        spec = tmp_path / "ep.yaml"
        spec.write_text(yaml.safe_dump(data))
        out = tmp_path / f"ep-{fidelity}"
        run(RunOptions(profile="gen2.yaml", workload=str(spec), out=out, fidelity=fidelity, sets=SMALL_RACKS))
        return json.loads((out / "summary.json").read_text())

    rep, full = go("representative"), go("full")
    assert full["throttle_thermal_fraction"] == pytest.approx(0.5, rel=1e-9)  # the hot rack's 8 of 16
    assert rep["throttle_thermal_fraction"] == pytest.approx(full["throttle_thermal_fraction"], rel=1e-6)
    assert rep["throttle_time_fraction"] == pytest.approx(full["throttle_time_fraction"], rel=1e-6)
    assert rep["step_time_s"] == pytest.approx(full["step_time_s"], rel=1e-9)
    assert rep["max_junction_temp_c"] == pytest.approx(full["max_junction_temp_c"], rel=1e-6)
    assert rep["energy_per_token_j"] == pytest.approx(full["energy_per_token_j"], rel=1e-3)
    # analyze reads the trace's per-class throttled share: the same half, not the whole class
    from simcore.report import analyze

    for fidelity, summary in (("representative", rep), ("full", full)):
        thermal = analyze(tmp_path / f"ep-{fidelity}" / "trace.h5")["thermal"]
        assert thermal["throttled_gpu_time_fraction"] == pytest.approx(
            summary["throttle_time_fraction"], rel=1e-6
        )
