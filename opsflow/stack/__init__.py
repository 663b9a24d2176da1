"""The local platform stack: the real services opsflow's flows talk to, on 127.0.0.1."""

from opsflow.stack.config import StackConfig
from opsflow.stack.manager import Stack

__all__ = ["Stack", "StackConfig"]
