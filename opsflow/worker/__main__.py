"""``python -m opsflow.worker start ...`` (the same as ``opsflow worker start``; errors end as one line and an exit
code, as the ``opsflow`` command's do)."""

import sys

from opsflow.core.commands import run_command
from opsflow.worker.cli import module_parser

sys.exit(run_command(module_parser(), sys.argv[1:]))
