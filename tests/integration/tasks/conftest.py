import pytest


@pytest.fixture(autouse=True)
def _run_logger_off(run_logger_off):
    """Tasks called with ``.fn()`` log through Prefect's run logger; outside a run it is disabled
    (``run_logger_off``, tests/support/run_logger.py)."""
    yield
