"""Where opsflow's own files are: the project root (the checkout this code runs from)."""

from __future__ import annotations

from pathlib import Path

#: The directory holding ``flows/``, ``tasks/``, ``blocks/``, ``deployments/`` and ``samples/``.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
