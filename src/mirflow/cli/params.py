"""``mirflow analyzers --params``: every analyzer parameter with its type, range or choices,
default and meaning, read from the analyzers' declared ``Params`` models (so it is always true).
``--markdown`` prints the same as the Markdown table the README holds."""

from __future__ import annotations

import json
import re
from typing import Any

from .. import analyzers as registry
from ..analyzers.base import describe_param


def format_default(value: Any) -> str:
    """A default as a user writes it in ``mirflow.toml`` / ``--set`` (``None`` = not set)."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, list, dict)):
        return json.dumps(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def rows(names: list[str] | None = None) -> list[dict[str, str]]:
    """One row per parameter of each analyzer in ``names`` (default: every registered one)."""
    out = []
    for name in names if names is not None else registry.available_names():
        for param, field in registry.get(name).Params.model_fields.items():
            out.append({"analyzer": name, "parameter": param, "allowed": describe_param(field),
                        "default": format_default(field.get_default(call_default_factory=True)),
                        "meaning": field.description or ""})
    return out


def markdown(names: list[str] | None = None) -> str:
    """The parameter table as Markdown (the README's *Analyzer parameters* table)."""
    def cell(text: str) -> str:  # a "|" would end the cell, "<key>" would read as an HTML tag
        return re.sub(r"<(?=[A-Za-z/])", "&lt;", text.replace("|", "\\|"))

    lines = ["| analyzer | parameter | allowed | default | meaning |", "|---|---|---|---|---|"]
    for r in rows(names):
        lines.append(f"| `{r['analyzer']}` | `{r['parameter']}` | {cell(r['allowed'])} | "
                     f"`{cell(r['default'])}` | {cell(r['meaning'])} |")
    return "\n".join(lines) + "\n"


def builtin_names() -> list[str]:
    """The analyzers that ship with mirflow (plugins left out), in the order of their modules in
    the registry's built-in list (not in import order, which depends on what was imported first)."""
    modules = [f"mirflow.analyzers.{m}" for m in registry._BUILTIN_MODULES]
    names = [n for n in registry.available_names() if registry.get(n).__module__ in modules]
    return sorted(names, key=lambda n: modules.index(registry.get(n).__module__))
