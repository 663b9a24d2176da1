"""Plugin: ``run_logger_off``, Prefect's run logger disabled for tasks called with ``.fn()``.

The ``tasks`` test directories turn it on for every test with an autouse ``_run_logger_off`` fixture
in their conftest.py; a module that checks the logs overrides ``_run_logger_off`` with one that does nothing.
"""

from __future__ import annotations

import pytest
from prefect.logging import disable_run_logger


@pytest.fixture
def run_logger_off():
    """Tasks called with ``.fn()`` log through Prefect's run logger; outside a run it is disabled."""
    with disable_run_logger():
        yield
