"""``python -m opsflow.webhook serve ...`` (the same as ``opsflow webhook serve``; errors end as one line and an exit
code, as the ``opsflow`` command's do)."""

import sys

from opsflow.core.commands import module_parser, run_command
from opsflow.webhook.cli import add_actions

sys.exit(run_command(module_parser("opsflow.webhook", "webhook", add_actions), sys.argv[1:]))
