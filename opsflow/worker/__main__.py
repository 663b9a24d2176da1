"""``python -m opsflow.worker start ...`` (the same as ``opsflow worker start``; errors end as one line and an exit
code, as the ``opsflow`` command's do)."""

import sys

from opsflow.core.commands import module_parser, run_command
from opsflow.worker.cli import add_actions

sys.exit(run_command(module_parser("opsflow.worker", "worker", add_actions), sys.argv[1:]))
