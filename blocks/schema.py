"""One JSON schema per block class and arguments, built once.

Prefect's ``Block`` builds its class's JSON schema (pydantic's ``model_json_schema`` plus its own passes over it)
every time it needs one, and ``Block.save`` needs it once per field (``_field_has_secrets``) and again for the
document's keys: saving the sample shop's ``Application`` took 0.16 s of CPU, nearly all of it building the
same schema again (profiled in the test suite, where fixtures save blocks: 3.5 s of one pytest process's 30 s).
A block class's schema cannot change while the process runs, so :class:`CachedJsonSchema` keeps the first one
and hands out copies (Prefect's callers may change what they get).
"""

from __future__ import annotations

import copy
from typing import Any

_SCHEMAS: dict[tuple, dict[str, Any]] = {}


class CachedJsonSchema:
    """Mixin for a ``Block`` subclass (listed before ``Block``): ``model_json_schema`` built once per class and
    arguments, a deep copy returned each time."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        key = (cls, args, tuple(sorted(kwargs.items())))
        schema = _SCHEMAS.get(key)
        if schema is None:
            schema = _SCHEMAS[key] = super().model_json_schema(*args, **kwargs)  # type: ignore[misc]
        return copy.deepcopy(schema)
