"""Reliability audit: the profiles' failure rates against the published figures they cite.

A profile's ``node_failures_per_1000_node_days`` is per node of ``rack.gpus_per_tray`` GPUs, but the
published rates are per node of their own size: Meta RSC-1's 6.5 per 1000 node-days (Kokolis et al.,
HPCA 2025) is per 8-GPU DGX A100 node, and Llama 3's 419 interruptions in 54 days on 16,384 H100 are over
2,048 8-GPU servers. A job of G GPUs must meet the cited cluster's mean time between failures at the same
GPU count, whatever the profile's node size (reference/reliability.yaml: MTTF ~ 1/(N_nodes r_f), projected
1.8 h at 16,384 GPUs and 0.23 h at 131,072).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from simcore.profile import load_profile
from simcore.runner import job_plan

HOUR = 3600.0
RSC1_PROFILES = (
    "a100-dgx.yaml",
    "gb200-nvl72.yaml",
    "gb300-nvl72.yaml",
    "gen2.yaml",
    "gen3.yaml",
    "mi300x.yaml",
    "mi325x.yaml",
    "mi355x.yaml",
)
LLAMA3_PROFILES = (
    "h100-dgx.yaml",
    "h200-hgx.yaml",
    "h800-hgx.yaml",
    "b200-dgx.yaml",
    "b300-dgx.yaml",
    "gen1.yaml",
)


def _job_mtbf_h(profile_name: str, gpus: int) -> float:
    """The job MTBF the runner's replay uses for a ``gpus``-GPU job on the profile."""
    spec = SimpleNamespace(
        gpus=gpus, job=SimpleNamespace(steps=1000, checkpoint_every=0, checkpoint_bytes=1e12)
    )
    return job_plan(spec, load_profile(profile_name), step_time_s=10.0, seed=0).job_mtbf_s / HOUR


@pytest.mark.parametrize("profile_name", RSC1_PROFILES)
def test_profiles_citing_meta_rsc1_give_its_projected_mttf_at_16k_and_131k_gpus(profile_name):
    # Kokolis: 6.5 failures per 1000 node-days of 8-GPU nodes -> 1.80 h at 16,384 GPUs, 0.225 h at 131,072
    assert _job_mtbf_h(profile_name, 16_384) == pytest.approx(1.8, rel=0.03)
    assert _job_mtbf_h(profile_name, 131_072) == pytest.approx(0.23, rel=0.03)


@pytest.mark.parametrize("profile_name", LLAMA3_PROFILES)
def test_profiles_citing_llama3_give_its_interruption_interval_at_16k_gpus(profile_name):
    # Llama 3: 419 unexpected interruptions in 54 days on 16,384 H100 -> one every 3.09 h
    assert _job_mtbf_h(profile_name, 16_384) == pytest.approx(54 * 24 / 419, rel=0.03)
