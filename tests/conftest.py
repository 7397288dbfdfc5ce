"""Shared fixtures: profiles are loaded once per session (pint registry build is the slow part)."""

from __future__ import annotations

import pytest

from simcore.profile import Profile, load_profile


@pytest.fixture(scope="session")
def gen2() -> Profile:
    return load_profile("gen2.yaml")
