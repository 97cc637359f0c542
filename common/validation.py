"""pydantic v2 errors as the one line a user reads: `field: problem`.

The schemas (common/config.py: a pydantic-core schema; simulator/scenario.py:
pydantic models) have validators that raise `ValueError(problem)` with our own wording; this
module turns the first error pydantic found into `nodes[1].balance: expected
a non-negative integer, got 'lots'`, the form every config message had
before pydantic (tests/test_config.py holds them).

    field_and_problem(error, schema, origins) -> ("nodes[1].balance", "expected ...")

`origins` maps a field path to the environment variable its value came
from, so the message can say "(from CL_NODE_N1_BALANCE)".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

# Types only: the caller has imported pydantic (or pydantic-core) already.
if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic_core import CoreSchema, ValidationError

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


# Schema types that wrap one inner schema (under "schema") without adding fields.
_WRAPPERS = ("function-before", "function-after", "function-wrap", "default", "nullable", "model")
_MAPPINGS = ("typed-dict", "model-fields")


def _fields_at(schema: Mapping[str, Any], loc: tuple[int | str, ...]) -> list[str] | None:
    """The field names of the mapping at `loc` in a pydantic-core schema (for
    "unknown field" messages); None if `loc` is not a mapping of known fields.
    A list index descends into a list's items, and is passed over elsewhere
    (an error of a list validated item by item names its index)."""
    definitions: dict[str, Mapping[str, Any]] = {}
    current = schema
    parts = list(loc)
    while True:
        kind = current.get("type")
        if kind == "definitions":
            definitions.update((d["ref"], d) for d in current["definitions"])
            current = current["schema"]
        elif kind == "definition-ref":
            current = definitions[current["schema_ref"]]
        elif kind in _WRAPPERS:
            current = current["schema"]
        elif not parts:
            break
        elif isinstance(parts[0], int):
            parts.pop(0)
            if kind == "list":
                current = current.get("items_schema", {"type": "any"})
        elif kind in _MAPPINGS and parts[0] in current["fields"]:
            current = current["fields"][parts.pop(0)]["schema"]
        else:
            return None
    return list(current["fields"]) if kind in _MAPPINGS else None


def field_and_problem(
    error: ValidationError,
    schema: type[BaseModel] | CoreSchema,
    origins: Mapping[str, str] | None = None,
    expected: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """The first problem pydantic found, as (field path, problem in our words).

    `schema`: what `error` came from, a pydantic model or a pydantic-core schema.
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
        core = schema.__pydantic_core_schema__ if isinstance(schema, type) else schema
        known = _fields_at(core, loc[:-1])
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
