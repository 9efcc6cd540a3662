"Shared pytest setup: the `slow` flag, and a headless matplotlib."
import os
import matplotlib
import pytest

matplotlib.use("Agg")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run heavy tests (always on when the CI environment variable is set)")


def run_slow(config) -> bool:
    "Heavy tests run in CI and when asked for with --slow."
    return bool(config.getoption("--slow") or os.environ.get("CI"))


def pytest_collection_modifyitems(config, items):
    if run_slow(config):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow (CI runs it)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
