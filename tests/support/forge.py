"""The forge emulator's pytest fixtures (the emulator itself is ``opsflow.stack.forge_emulator``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from opsflow.stack.forge_emulator import TOKEN, ForgeEmulator

__all__ = ["TOKEN", "ForgeEmulator", "forge_emulator_fixture", "forge_fixture"]


# Registered under their fixture names; the functions are named apart so that a test module can
# import them (``from tests.forge_emulator import forge_fixture, forge_emulator_fixture``) without
# its ``forge`` parameters shadowing an imported name.
@pytest.fixture(scope="session", name="forge_emulator")
def forge_emulator_fixture() -> Iterator[ForgeEmulator]:
    """The forge emulator, started once per session on a free port of 127.0.0.1."""
    emulator = ForgeEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(name="forge")
def forge_fixture(forge_emulator: ForgeEmulator) -> Iterator[ForgeEmulator]:
    """The session's forge emulator with no statuses, comments, requests or faults."""
    forge_emulator.reset()
    yield forge_emulator
    forge_emulator.reset()
