"""opsflow: Prefect 3 workflows for a small platform team.

The importable packages are layered ``opsflow.cli`` -> ``opsflow.stack`` -> ``flows`` ->
``tasks`` -> ``blocks`` -> ``opsflow.core.errors``/``opsflow.core.proc``; import-linter keeps it so.
"""

__version__ = "0.1.0"
