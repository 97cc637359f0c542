"""pydantic v2 errors as the one line a user reads: `field: problem`.

The schemas (common/config.py, simulator/scenario.py) are pydantic models
whose validators raise `ValueError(problem)` with our own wording; this
module turns the first error pydantic found into `nodes[1].balance: expected
a non-negative integer, got 'lots'`, the form every config message had
before pydantic (tests/test_config.py holds them).

    field_and_problem(error, model, origins) -> ("nodes[1].balance", "expected ...")

`origins` maps a field path to the environment variable its value came
from, so the message can say "(from CL_NODE_N1_BALANCE)".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

# Shapes pydantic checks itself, in our words. Keyed by pydantic's error type.
TYPE_PROBLEMS = {
    "missing": "missing",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "int_parsing": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
}


def field_path(loc: tuple[int | str, ...]) -> str:
    """('nodes', 1, 'balance') -> 'nodes[1].balance'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str] | None:
    """The field names of the model at `loc` (for "unknown field" messages)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        current = info.annotation
        args = getattr(current, "__args__", None)
        if args:  # list[Node], Node | None, ...: the model inside
            current = next(
                (a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), current
            )
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [info.alias or name for name, info in current.model_fields.items()]
    return None


def field_and_problem(
    error: ValidationError,
    model: type[BaseModel],
    origins: Mapping[str, str] | None = None,
    expected: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """The first problem pydantic found, as (field path, problem in our words).

    `expected`: what to say when the value at a path has the wrong shape
    (e.g. "nodes[*]" -> "expected a mapping with id, address and balance");
    `[*]` matches any list index.
    """
    first = error.errors(include_url=False)[0]
    loc = tuple(first["loc"])
    path = field_path(loc)
    kind = first["type"]
    if kind == "value_error":
        problem = str(first["ctx"]["error"])
    elif kind == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        problem = "unknown field" + (
            f" (expected one of: {', '.join(sorted(known))})" if known else ""
        )
    else:
        pattern = "".join(
            "[*]" if isinstance(part, int) else (f".{part}" if i else str(part))
            for i, part in enumerate(loc)
        )
        if expected and (pattern in expected or path in expected) and kind != "missing":
            problem = expected.get(path) or expected[pattern]
        else:
            problem = TYPE_PROBLEMS.get(kind, first["msg"])
    origin = (origins or {}).get(path)
    if origin is not None:
        problem += f" (from {origin})"
    return path, problem
