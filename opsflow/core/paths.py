"""Where opsflow's own files are: the project root, in a checkout or in an installed wheel.

In a checkout (``uv sync`` installs it editable) the root is the checkout itself: ``flows/``,
``tasks/``, ``blocks/``, ``deployments/`` and ``samples/`` sit beside ``opsflow/``. A wheel
(``uv build``) carries the same tree as package data under ``opsflow/_project/`` and puts that
directory on ``sys.path`` with ``opsflow-project.pth``, so ``import flows`` works the same in both
and ``opsflow apply`` finds ``deployments/prefect.yaml`` without a checkout.
"""

from __future__ import annotations

from pathlib import Path

#: The ``opsflow`` package directory.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Where a wheel puts the project tree (absent in a checkout).
BUNDLED_ROOT = PACKAGE_DIR / "_project"
#: True when this code runs from an installed wheel rather than from a checkout.
INSTALLED = (BUNDLED_ROOT / "deployments" / "prefect.yaml").is_file()
#: The directory holding ``flows/``, ``tasks/``, ``blocks/``, ``deployments/`` and ``samples/``.
PROJECT_ROOT = BUNDLED_ROOT if INSTALLED else PACKAGE_DIR.parent
#: The deployments of every opsflow flow (``opsflow apply`` applies them).
PREFECT_FILE = PROJECT_ROOT / "deployments" / "prefect.yaml"
#: What a wheel's build recorded about its source (commit, repository); see :mod:`opsflow.core.version`.
BUILD_INFO_FILE = PACKAGE_DIR / "_build.json"
