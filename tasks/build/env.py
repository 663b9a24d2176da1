"""The environment of every command that runs a repository's code: scrubbed, with a home of its own.

Builds, tests and dependency installs see PATH (without opsflow's virtualenv), the locale, a ``HOME``
and ``TMPDIR`` in the run's workspace, the package managers' shared download caches, ``CI=true`` and
the commit: nothing of the worker's environment (no Prefect API URL or auth string, no stack or
database settings, no cloud or registry credentials). The env files the component declares are files
in the checkout, read by the build's own tools.
"""

from __future__ import annotations

from opsflow.core.proc import scrubbed_environment
from tasks.build.caches import TreeCache
from tasks.git import Checkout


def build_environment(checkout: Checkout, cache: TreeCache | None = None,
                      extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment for a build, test or install command in ``checkout``."""
    env = {"CI": "true", "OPSFLOW_COMMIT": checkout.sha, "npm_config_update_notifier": "false",
           "npm_config_fund": "false", "npm_config_audit": "false", "NEXT_TELEMETRY_DISABLED": "1"}
    if cache is not None:
        env.update({"npm_config_cache": str(cache.tool_dir("npm")), "YARN_CACHE_FOLDER": str(cache.tool_dir("yarn")),
                    "UV_CACHE_DIR": str(cache.tool_dir("uv")), "PIP_CACHE_DIR": str(cache.tool_dir("pip"))})
    env.update(extra or {})
    return scrubbed_environment(checkout.home, env)
