"""Benchmark options: ``--benchmark-scale large`` switches suites to their real-measurement sizes."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--benchmark-scale",
        choices=("quick", "large"),
        default="quick",
        help="quick (CI-sized, default) or large (real measurements)",
    )


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--benchmark-scale")
