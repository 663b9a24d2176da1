import pytest
from prefect.logging import disable_run_logger


@pytest.fixture(autouse=True)
def _run_logger_off():
    """Tasks called with ``.fn()`` log through Prefect's run logger; outside a run it is disabled."""
    with disable_run_logger():
        yield
