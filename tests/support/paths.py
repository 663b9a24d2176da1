"""Where things are, whatever the depth of the test module asking: the repository root and ``test-output/``."""

from __future__ import annotations

from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
ROOT = SUPPORT.parents[1]
OUTPUT = ROOT / "test-output"
