"""What every test module shares: the `needs_dot` marker.

A test marked `@pytest.mark.needs_dot` draws an image with Graphviz's `dot`. Where `dot` is
installed it runs (it is never skipped there); where it is not, it is skipped with the reason
and how to install it, so `make test` passes on a machine without Graphviz, as the README
promises (images are optional: DOT and Mermaid text need no Graphviz).
"""

from __future__ import annotations

import shutil

import pytest

DOT_MISSING = (
    "Graphviz's dot is not installed, so images cannot be drawn "
    "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz)"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_dot: the test draws an image with Graphviz's dot (skipped, saying why, without it)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_dot") is not None and shutil.which("dot") is None:
        pytest.skip(DOT_MISSING)
