"""``python -m opsflow.worker start ...`` (the same as ``opsflow worker start``)."""

import argparse
import sys

from opsflow.core.errors import OpsflowError
from opsflow.worker.cli import register

parser = argparse.ArgumentParser(prog="python -m opsflow.worker")
register(parser.add_subparsers(dest="command", required=True))
arguments = parser.parse_args(["worker", *sys.argv[1:]])
try:
    sys.exit(arguments.func(arguments))
except OpsflowError as exc:
    print(f"opsflow: error: {exc}", file=sys.stderr)
    sys.exit(2)
