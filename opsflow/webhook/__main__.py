"""``python -m opsflow.webhook serve ...`` (the same as ``opsflow webhook serve``)."""

import argparse
import sys

from opsflow.webhook.cli import register

parser = argparse.ArgumentParser(prog="python -m opsflow.webhook")
register(parser.add_subparsers(dest="command", required=True))
arguments = parser.parse_args(["webhook", *sys.argv[1:]])
sys.exit(arguments.func(arguments))
