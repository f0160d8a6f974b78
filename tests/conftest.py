"""Settings shared by every test module."""

from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(autouse=True)
def inner_runs_ignore_ci_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Give inner pytest sessions the same output on CI as on a desk.

    pytest prints full, untruncated failure messages in its short summary when
    ``CI`` or ``BUILD_NUMBER`` is set, so a report would appear twice and tests
    that count reports would see double.
    """
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    yield
