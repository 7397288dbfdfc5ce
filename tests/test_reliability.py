"""Job-level replay (simcore.reliability): checkpoints, failures and restarts against closed forms.

Daly (2006): with Poisson failures of mean M, restart cost R (failures during recovery restart it),
compute interval τ and checkpoint δ, the expected wall time of T_s of work is
M·e^{R/M}·(e^{(τ+δ)/M} − 1)·T_s/τ. A synchronous job of N nodes whose nodes fail as independent
exponential renewals is exactly such a Poisson process with M = node MTBF / N.
"""

from __future__ import annotations

import itertools
import math

import pytest

from simcore.reliability import JobPlan, daly_interval_s, first_order_goodput, replay_job
from simcore.runner import RunOptions, run

HOUR = 3600.0


def _plan(**kw) -> JobPlan:
    base = dict(
        steps=100_000,
        step_time_s=2.0,
        checkpoint_s=60.0,
        checkpoint_every=500,
        nodes=100,
        node_mtbf_s=300 * HOUR,  # job MTBF 3 h
        detect_s=300.0,
        restart_s=900.0,
    )
    base.update(kw)
    return JobPlan(**base)


def test_without_failures_the_job_pays_only_its_checkpoints():
    plan = _plan(node_mtbf_s=math.inf, steps=1234, checkpoint_every=100)
    r = replay_job(plan)
    assert r.failures == 0 and r.lost_work_s == 0.0 and r.down_s == 0.0
    assert r.checkpoints == 13  # 12 full segments and the last 34 steps, each ends with a checkpoint
    assert r.wall_s == pytest.approx(1234 * 2.0 + 13 * 60.0, rel=1e-12)
    assert r.goodput == pytest.approx(2468.0 / (2468.0 + 780.0), rel=1e-12)


def test_daly_interval_matches_the_modeling_notes_example():
    # δ = 60 s, M = 3 h: Young 18.97 min, Daly 18.31 min (modeling-notes 4.2)
    assert math.sqrt(2 * 60 * 3 * HOUR) / 60 == pytest.approx(18.97, abs=0.005)
    assert daly_interval_s(60.0, 3 * HOUR) / 60 == pytest.approx(18.31, abs=0.005)
    assert daly_interval_s(7 * HOUR, 3 * HOUR) == 3 * HOUR  # δ >= 2M: checkpoint once per MTBF
    assert first_order_goodput(18.31 * 60, 60.0, 3 * HOUR, 0.0) == pytest.approx(1 - 0.105, abs=0.002)


@pytest.mark.parametrize("every", [250, 550, 2000])
def test_wall_time_matches_dalys_expectation_for_poisson_failures(every):
    # ~2,000 failures per run over 3 seeds: the mean wall time is within 2 % of Daly's exact expectation
    plan = _plan(checkpoint_every=every, steps=every * 1000)
    m, r_cost = plan.job_mtbf_s, plan.detect_s + plan.restart_s
    tau, delta = every * plan.step_time_s, plan.checkpoint_s
    expected = m * math.exp(r_cost / m) * math.expm1((tau + delta) / m) * plan.steps * plan.step_time_s / tau
    walls = [replay_job(JobPlan(**{**plan.__dict__, "seed": s})).wall_s for s in range(3)]
    assert sum(walls) / 3 == pytest.approx(expected, rel=0.02)


def test_an_interval_longer_than_the_job_is_reported_as_the_one_checkpoint_it_takes():
    # checkpoint_every beyond job.steps checkpoints once, at the end: the summary says so, and the closed form
    # is that of the job's own length (not of a 10,000x longer interval, which clamps it to 0)
    whole = replay_job(_plan(steps=2000, checkpoint_every=2000)).summary()
    longer = replay_job(_plan(steps=2000, checkpoint_every=20_000_000)).summary()
    assert longer["job_checkpoints"] == 1 and longer["job_checkpoint_every_steps"] == 2000
    assert longer == whole


def test_the_automatic_interval_is_dalys_and_beats_a_third_or_thrice_it():
    auto = replay_job(_plan(checkpoint_every=0, steps=500_000))
    assert auto.checkpoint_every == round(daly_interval_s(60.0, 3 * HOUR) / 2.0)
    for every in (auto.checkpoint_every // 3, auto.checkpoint_every * 3):
        other = replay_job(_plan(checkpoint_every=every, steps=500_000))
        assert other.goodput < auto.goodput


def test_failures_arrive_at_the_nodes_rate_whatever_the_weibull_shape():
    for shape in (0.7, 1.0, 1.5):
        r = replay_job(_plan(weibull_shape=shape, steps=1_000_000, checkpoint_every=1000))
        expected = r.wall_s / (300 * HOUR) * 100  # renewal theorem: N · t / mean
        assert abs(r.failures - expected) < 5 * math.sqrt(expected), shape


def test_more_hot_spares_never_lengthen_the_job_when_replacements_are_slow():
    walls = [
        replay_job(_plan(replace_s=6 * HOUR, hot_spares=n, steps=200_000, seed=3)).wall_s
        for n in (0, 1, 2, 8)
    ]
    assert all(a >= b for a, b in itertools.pairwise(walls))
    assert walls[0] > walls[-1]
    no_wait = replay_job(_plan(replace_s=0.0, steps=200_000, seed=3)).wall_s
    assert walls[-1] >= no_wait


def test_same_seed_same_job_other_seed_other_failures():
    a, b = replay_job(_plan(seed=7)), replay_job(_plan(seed=7))
    assert (a.wall_s, a.failures, a.lost_work_s) == (b.wall_s, b.failures, b.lost_work_s)
    assert replay_job(_plan(seed=8)).wall_s != a.wall_s


def test_goodput_never_exceeds_one() -> None:
    # 49 steps of 0.9 s, each checkpointed in no time, sum to a wall time a rounding below 49 x 0.9 s
    result = replay_job(
        JobPlan(
            steps=49, step_time_s=0.9, checkpoint_s=0.0, checkpoint_every=1, nodes=1, node_mtbf_s=math.inf
        )
    )
    assert result.wall_s < result.useful_s  # the float sum the clamp is for
    assert result.goodput == 1.0 and result.summary()["goodput"] == 1.0


def test_a_training_run_with_a_job_section_reports_goodput(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "model: llama3-8b\nparallelism: {tp: 8, dp: 9}\nbatch: {global_seqs: 72}\nsteps: 1\n"
        "job: {steps: 50000, checkpoint_every: 1000}\n"
    )
    common = dict(profile="gen2.yaml", workload=str(spec), write_trace=False)
    s = run(RunOptions(**common)).summary
    assert s["job_steps"] == 50000 and s["job_checkpoint_every_steps"] == 1000 and s["job_checkpoints"] == 50
    # 72 GPUs = 18 compute trays at 3.25 failures per 1000 tray-days (RSC-1's 6.5 per 8-GPU node, per GPU);
    # checkpoint = 14 B per parameter written at 2 GB/s per GPU
    assert s["job_mtbf_s"] == pytest.approx(1000 / 3.25 * 86400 / 18, rel=1e-12)
    assert s["job_checkpoint_s"] == pytest.approx(14 * 8.03e9 / (2e9 * 72), rel=0.01)
    assert 0 < s["goodput"] <= 1 and s["job_wall_s"] >= 50000 * s["step_time_s"]
    assert run(RunOptions(**common)).summary["job_wall_s"] == s["job_wall_s"]  # same seed, same job
    plain = tmp_path / "plain.yaml"
    plain.write_text(spec.read_text().rsplit("job:", 1)[0])
    assert (
        "goodput" not in run(RunOptions(profile="gen2.yaml", workload=str(plain), write_trace=False)).summary
    )


def test_the_summary_alone_reproduces_the_jobs_failures(tmp_path):
    """With --no-trace summary.json is all a run leaves: it records the seed, the --set overrides as given
    and the job's effective inputs, enough to replay the same failures without the profile or the spec."""
    from simcore.reliability import DAY_S

    spec = tmp_path / "job.yaml"
    spec.write_text(
        "model: llama3-8b\nparallelism: {tp: 8}\nbatch: {global_seqs: 64}\nsteps: 1\njob: {steps: 100000}\n"
    )
    sets = ["reliability.node_failures_per_1000_node_days=650", "reliability.restart_time=20 min"]
    s = run(RunOptions(profile="gen3.yaml", workload=str(spec), seed=7, sets=sets, write_trace=False)).summary
    assert s["seed"] == 7 and s["overrides"] == sets
    inputs = s["inputs"]
    assert inputs["profile"] == "gen3.yaml" and inputs["workload"] == str(spec) and inputs["racks"] == 1
    job, rel = inputs["job"], inputs["reliability"]
    assert job["steps"] == 100000 and job["checkpoint_every"] == 0 and job["nodes"] == 2
    assert rel["node_failures_per_1000_node_days"] == 650.0 and rel["restart_time_s"] == 1200.0
    replayed = replay_job(
        JobPlan(
            steps=job["steps"],
            step_time_s=s["step_time_s"],
            checkpoint_s=job["checkpoint_bytes"] / (rel["checkpoint_bandwidth_Bps"] * s["gpus"]),
            checkpoint_every=job["checkpoint_every"],
            nodes=job["nodes"],
            node_mtbf_s=1000.0 * DAY_S / rel["node_failures_per_1000_node_days"],
            weibull_shape=rel["weibull_shape"],
            detect_s=rel["detect_time_s"],
            restart_s=rel["restart_time_s"],
            replace_s=rel["replace_time_s"],
            hot_spares=rel["hot_spares"],
            seed=s["seed"],
        )
    ).summary()
    assert s["job_failures"] > 0
    assert {k: s[k] for k in replayed} == replayed
    plain = run(RunOptions(profile="gen2.yaml", workload="llama3-8b", steps=1, write_trace=False)).summary
    assert plain["seed"] == 0 and plain["overrides"] == [] and plain["inputs"]["job"] is None
    assert plain["inputs"]["reliability"] is None and plain["inputs"]["steps"] == 1


@pytest.mark.parametrize(
    "job,says",
    [
        ("{steps: 0}", "job.steps"),
        ("{steps: 10, every: 5}", "job.every"),
        ("{checkpoint_every: 5}", "job.steps"),
    ],
)
def test_bad_job_sections_are_one_line(tmp_path, job, says):
    from simcore.errors import ConfigError

    spec = tmp_path / "bad.yaml"
    spec.write_text(f"model: llama3-8b\nparallelism: {{tp: 8}}\nbatch: {{global_seqs: 8}}\njob: {job}\n")
    with pytest.raises(ConfigError) as info:
        run(RunOptions(profile="gen2.yaml", workload=str(spec), write_trace=False))
    assert says in str(info.value) and "\n" not in str(info.value)


def test_a_job_too_long_to_replay_is_refused_before_its_step_is_simulated(tmp_path, monkeypatch):
    """A typo'd job.steps named with its file before minutes of simulation, not after."""
    from simcore.engine import Machine
    from simcore.errors import ConfigError

    def never(*args, **kwargs):
        raise AssertionError("the step was simulated")

    monkeypatch.setattr(Machine, "run", never)
    spec = tmp_path / "long.yaml"
    # a checkpoint every step of 100 million: 1e8 checkpoints to replay (job.steps itself stops at 2^31 - 1)
    job = "job: {steps: 100000000, checkpoint_every: 1}"
    spec.write_text(f"model: llama3-8b\nparallelism: {{tp: 8}}\nbatch: {{global_seqs: 8}}\n{job}\n")
    with pytest.raises(ConfigError, match=r"long\.yaml: job\.steps: the job is too long to replay") as info:
        run(RunOptions(profile="gen2.yaml", workload=str(spec), write_trace=False))
    assert "got 100000000" in str(info.value) and "\n" not in str(info.value)


def test_a_job_refused_for_its_failure_rate_names_the_failure_rate(tmp_path, monkeypatch):
    """A trillion failures per 1000 node-days makes a 100,000-step job too long to replay: the error names
    the failure rate (and the failures it implies), not job.steps."""
    from simcore.engine import Machine
    from simcore.errors import ConfigError

    monkeypatch.setattr(Machine, "run", lambda *a, **k: pytest.fail("the step was simulated"))
    spec = tmp_path / "job.yaml"
    spec.write_text("model: llama3-8b\nparallelism: {tp: 8}\nbatch: {global_seqs: 8}\njob: {steps: 100000}\n")
    opts = dict(profile="gen2.yaml", workload=str(spec), write_trace=False)
    with pytest.raises(
        ConfigError, match=r"node_failures_per_1000_node_days: the job is too long .* failures"
    ) as info:
        run(RunOptions(**opts, sets=["reliability.node_failures_per_1000_node_days=1e12"]))
    # the rate came from --set, not from gen2.yaml: the error says so
    assert str(info.value).startswith("--set reliability.node_failures_per_1000_node_days=1e12 (over ")
    with pytest.raises(ConfigError, match=r"job\.steps: the job is too long to replay"):
        run(RunOptions(**opts, sets=["job.steps=100000000", "job.checkpoint_every=1"]))


def test_the_up_front_event_count_is_a_lower_bound_of_the_replays():
    """The check before simulating must never refuse a job whose real (longer) step the replay accepts."""
    from simcore.reliability import checkpoint_every, min_replay_events

    daly = dict(checkpoint_every=0)
    for kw in (
        dict(steps=10**6, **daly),
        dict(steps=10**5, checkpoint_every=7),
        dict(steps=3000, node_mtbf_s=1e6, **daly),
    ):
        fast = _plan(**kw, step_time_s=0.5)
        for slower in (0.5, 0.71, 1.3, 4.0):
            plan = _plan(**kw, step_time_s=slower)
            every = checkpoint_every(plan)
            segment = every * plan.step_time_s + plan.checkpoint_s
            failures = math.ceil(plan.steps / every) * math.expm1(segment / plan.job_mtbf_s)
            assert min_replay_events(fast) <= math.ceil(plan.steps / every) + failures


def test_a_job_whose_recoveries_outlast_its_failures_says_so():
    from simcore.errors import RacksimError

    # job MTBF 3 h, every recovery waits 2 days for a node: e^(R/M) ~ 1e7 failure-free times
    with pytest.raises(RacksimError, match=r"the job does not finish.*add hot spares"):
        replay_job(_plan(replace_s=48 * HOUR, steps=2000))


@pytest.mark.parametrize(
    "kw, says",
    [
        # a checkpoint every step of a job of a billion steps: 1e9 checkpoints to replay
        (dict(steps=10**9, checkpoint_every=1), r"too long to replay: 1,000,000,000 steps .* job\.steps"),
        # a node failing every 10 s: no 20-minute recovery ever completes
        (dict(node_mtbf_s=1000.0), r"does not finish: each recovery needs ~e\^"),
        # a checkpoint of 30 days against a 3-hour job MTBF: no interval ever completes
        (
            dict(checkpoint_s=30 * 24 * HOUR),
            r"does not finish: 500 steps and a checkpoint .*job\.checkpoint_bytes",
        ),
    ],
)
def test_a_job_the_replay_cannot_finish_is_refused_before_it_starts(kw, says, monkeypatch):
    """Without the up-front check these ran for minutes to hours (until MAX_FAILURES or MAX_STRETCH):
    the simpy replay must never start."""
    from simcore import reliability
    from simcore.errors import RacksimError

    def never(*args, **kwargs):
        raise AssertionError("the replay started")

    monkeypatch.setattr(reliability.simpy, "Environment", never)
    with pytest.raises(RacksimError, match=says):
        replay_job(_plan(**kw))


def test_a_low_weibull_shape_runs_and_a_degenerate_one_is_refused():
    from simcore.errors import ConfigError
    from simcore.profile import load_profile

    r = replay_job(_plan(weibull_shape=0.2, steps=20_000))
    assert r.wall_s > 0 and math.isfinite(r.goodput)
    with pytest.raises(ConfigError, match=r"reliability\.weibull_shape"):
        load_profile("gen2.yaml", ["reliability.weibull_shape=0.01"])


def test_a_job_shorter_than_a_node_lifetime_sees_the_nodes_rate_whatever_the_shape():
    """A fleet that has been running (not brand-new nodes at t = 0): over a job of a few days on nodes that
    fail every ~260 days, Weibull shapes 0.7 and 1.5 still give the configured rate (the first failure is
    the equilibrium residual life). New nodes at t = 0 gave 2.4x and 0.25x of it."""
    for shape in (0.6, 0.7, 1.5, 2.0):
        counts = []
        for seed in range(4):
            plan = _plan(weibull_shape=shape, nodes=2000, node_mtbf_s=6300 * HOUR, steps=150_000, seed=seed)
            r = replay_job(plan)
            counts.append((r.failures, r.wall_s / (6300 * HOUR) * 2000))
        got, expected = sum(c[0] for c in counts), sum(c[1] for c in counts)
        assert abs(got - expected) < 4 * math.sqrt(expected), (shape, got, expected)


def test_a_replacement_is_ordered_once_the_failure_is_detected():
    """Detection, then the replacement node, then the restart: a replacement no slower than detection is
    not free (it used to be ordered at the failure itself, hidden under detection)."""
    one = dict(steps=20_000, seed=5)
    quick, slow = (replay_job(_plan(replace_s=r, **one)) for r in (0.0, 300.0))
    assert slow.failures > 0 and quick.failures > 0
    per_failure = [r.down_s / r.failures for r in (quick, slow)]
    assert per_failure[1] == pytest.approx(per_failure[0] + 300.0, rel=0.05)


def test_llama3_405b_on_16k_h100_for_54_days_matches_the_papers_interruptions_and_goodput():
    """Llama 3 (Meta, 2024, §3.3.4): 419 unexpected interruptions in a 54-day snapshot of 405B pre-training on
    16,384 H100, with higher than 90 % effective training time. The h100-dgx profile's failure rate comes
    from that count; its mean detect / restart times (5 / 10 min, under MegaScale's bounds) give the
    goodput. Step time 6.93 s is racksim's for the paper's layout (TP8 PP16 DP128, 16M-token batches)."""
    from simcore.profile import load_profile

    rel = load_profile("h100-dgx.yaml").reliability
    step_s, gpus = 6.93, 16_384
    plan = JobPlan(
        steps=int(54 * 86_400 / step_s),
        step_time_s=step_s,
        checkpoint_s=14.0 * 405e9 / (rel.checkpoint_bandwidth * gpus),
        checkpoint_every=0,
        nodes=gpus // 8,
        node_mtbf_s=1000.0 * 86_400 / rel.node_failures_per_1000_node_days,
        detect_s=rel.detect_time,
        restart_s=rel.restart_time,
    )
    results = [replay_job(JobPlan(**{**plan.__dict__, "seed": s})) for s in range(3)]
    for r in results:
        per_day = r.failures / (r.wall_s / 86_400)
        assert per_day == pytest.approx(419 / 54, rel=0.15)
        assert 0.90 < r.goodput < 0.95
