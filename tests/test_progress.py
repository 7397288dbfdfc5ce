"""A long training run says how far it is on stderr, at most every PROGRESS_EVERY_S of wall time; a short
one says nothing, and the last step is never announced (the summary follows it)."""

from __future__ import annotations

from simcore import runner


def test_step_progress_speaks_every_interval_with_an_estimate(monkeypatch):
    clock = iter([0.0, 4.0, 10.5, 12.0, 21.0, 40.0])  # start, then one reading per step end
    monkeypatch.setattr(runner.time, "perf_counter", lambda: next(clock))
    said: list[str] = []
    on_step = runner._step_progress(said.append, steps=5)
    for done in range(1, 6):
        on_step(done)
    # 10.5 s after 2 steps: 3 left at 5.25 s each; 21 s after 4 steps: 1 left at 5.25 s; step 5 is the end
    assert said == [
        "step 2 of 5 simulated in 10 s; ~16 s left",
        "step 4 of 5 simulated in 21 s; ~5 s left",
    ]


def test_a_real_run_reports_through_its_progress_callback(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "PROGRESS_EVERY_S", 0.0)
    said: list[str] = []
    runner.run(
        runner.RunOptions(
            profile="gen2.yaml",
            workload="llama3-8b",
            steps=3,
            out=tmp_path,
            write_trace=False,
            progress=said.append,
        )
    )
    steps = [m for m in said if m.startswith("step ")]
    assert [m.split(" simulated")[0] for m in steps] == ["step 1 of 3", "step 2 of 3"]


def test_the_start_line_counts_one_step_and_one_gpu_in_the_singular(tmp_path):
    said: list[str] = []
    spec = tmp_path / "one.yaml"
    spec.write_text("model: {preset: llama3-8b, layers: 2}\nbatch: {global_seqs: 1}\nsteps: 1\n")
    runner.run(
        runner.RunOptions(profile="gen2.yaml", workload=str(spec), write_trace=False, progress=said.append)
    )
    assert said[0].startswith("simulating llama3-8b on 1 GPU of ") and said[0].endswith("ep1), 1 step")


def test_the_start_line_says_when_racksim_chose_the_layout(tmp_path):
    """A bare preset runs on racksim's automatic layout (docs/workloads.md): the start line says so, and
    whether a --set changed it; a spec that gives its layout gets no such words."""
    said: list[str] = []
    opts = dict(profile="gen2.yaml", steps=1, write_trace=False, progress=said.append)
    runner.run(runner.RunOptions(workload="llama3-8b", out=tmp_path / "a", **opts))
    assert said[0].endswith("ep1: the preset's automatic layout), 1 step")
    said.clear()
    runner.run(runner.RunOptions(workload="llama3-8b", sets=["parallelism.tp=2"], out=tmp_path / "b", **opts))
    assert said[0].endswith("ep1: the preset's automatic layout, with your --set), 1 step")
    said.clear()
    spec = tmp_path / "one.yaml"
    spec.write_text("model: {preset: llama3-8b, layers: 2}\nbatch: {global_seqs: 1}\nsteps: 1\n")
    runner.run(runner.RunOptions(workload=str(spec), out=tmp_path / "c", **opts))
    assert "automatic" not in said[0]
