"""Plugin: the forge emulator's pytest fixtures ``forge_emulator`` and ``forge`` (the emulator itself is
``opsflow.stack.forge_emulator``). Registered in ``tests/conftest.py``; request them by name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from opsflow.stack.forge_emulator import TOKEN, ForgeEmulator

__all__ = ["TOKEN", "ForgeEmulator", "forge_emulator_fixture", "forge_fixture"]


@pytest.fixture(scope="session")
def forge_emulator_server() -> Iterator[ForgeEmulator]:
    """The forge emulator's server, started once per session on a free port of 127.0.0.1."""
    emulator = ForgeEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()


# Registered under their fixture names; the functions are named apart so that a module importing
# this one does not have its ``forge`` parameters shadow an imported name.
@pytest.fixture(scope="module", name="forge_emulator")
def forge_emulator_fixture(forge_emulator_server: ForgeEmulator) -> ForgeEmulator:
    """The session's forge emulator, with no statuses, comments, requests or faults when a test module first
    uses it: each module starts from a clean emulator (as when each module imported a fixture of its own),
    while one server serves the session."""
    forge_emulator_server.reset()
    return forge_emulator_server


@pytest.fixture(name="forge")
def forge_fixture(forge_emulator: ForgeEmulator) -> Iterator[ForgeEmulator]:
    """The session's forge emulator with no statuses, comments, requests or faults."""
    forge_emulator.reset()
    yield forge_emulator
    forge_emulator.reset()
