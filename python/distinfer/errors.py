"""One error formatter for everything a person writes: models files, scenarios files, a scenario given
as JSON/YAML (`--spec`) or as command-line options, and the plan request.

A pydantic ValidationError becomes one line per problem: where (the entry, by index and by its
`name:` where it has one, then the field), what was wrong, the value given, and what to do instead;
then where working examples are. No raw pydantic dump reaches a person.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

# (where, the schema class the field belongs to, or None)
Locator = Callable[[tuple[int | str, ...], Any], tuple[str, type[BaseModel] | None]]

_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def entry_locator(
    list_key: str | None, root: type[BaseModel] | None, entry: type[BaseModel] | None
) -> Locator:
    """Where a problem is in a document that is a mapping, optionally with a list of named entries
    under `list_key`: `scenarios[2] ('bs32').users`."""

    def locate(loc: tuple[int | str, ...], data: Any) -> tuple[str, type[BaseModel] | None]:
        parts = list(loc)
        if list_key and len(parts) >= 2 and parts[0] == list_key and isinstance(parts[1], int):
            index = parts[1]
            items = data.get(list_key) if isinstance(data, dict) else None
            item = items[index] if isinstance(items, list) and index < len(items) else None
            label = f"{list_key}[{index}]"
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                label += f" ({item['name']!r})"
            rest = parts[2:]
            label += "".join(f".{r}" for r in rest)
            return label, entry if len(rest) == 1 else None
        return ".".join(str(p) for p in parts) or "(top level)", root if len(parts) <= 1 else None

    return locate


def default_fix(item: Mapping[str, Any], owner: type[BaseModel] | None) -> str:
    """What to change, for the error kinds a hand-written file or a command line runs into."""
    kind = item["type"]
    field = str(item["loc"][-1]) if item["loc"] else ""
    if kind == "missing":
        return f"add `{field}:`"
    if kind == "extra_forbidden":
        allowed = f"; allowed here: {', '.join(owner.model_fields)}" if owner is not None else ""
        return f"remove `{field}` or fix its spelling{allowed}"
    if kind in _BOUNDS:
        limit = next(iter((item.get("ctx") or {}).values()), "?")
        return f"use a value {_BOUNDS[kind]} {limit}"
    return ""


def format_validation_error(
    err: ValidationError,
    source: str,
    what: str,
    *,
    data: Any = None,
    examples: str | None = None,
    locate: Locator | None = None,
    fix: Callable[[Mapping[str, Any], type[BaseModel] | None], str] = default_fix,
    advice: Mapping[str, str] | None = None,
) -> str:
    """`<source> is not <what>:` then one line per problem. `advice` adds a fix by field name."""
    where_of = locate or entry_locator(None, None, None)
    lines = [f"{source} is not {what}:"]
    for item in err.errors():
        where, owner = where_of(tuple(item["loc"]), data)
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) or item["type"] == "missing" else f" (got {got!r})"
        field = str(item["loc"][-1]) if item["loc"] else ""
        # Our own messages (value errors) already say what to do.
        hint = fix(item, owner) or ("" if item["type"] == "value_error" else (advice or {}).get(field, ""))
        message = str(item["msg"]).removeprefix("Value error, ")  # our own messages carry their fix
        if item["type"] == "value_error" and where == "(top level)":
            lines.append(f"  - {message}")
            continue
        lines.append(f"  - {where}: {message}{shown}" + (f"; fix: {hint}" if hint else ""))
    if examples:
        lines.append(f"See {examples} for working examples.")
    return "\n".join(lines)
