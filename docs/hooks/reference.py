"""MkDocs hook: the references that are generated from the code, at every build.

A page asks for a generated part with a marker line, ``<!-- kiln:NAME -->``; the hook
replaces it with markdown built from the code itself:

- ``kiln:settings``: every KILN_* variable, from ``KilnSettings``' fields and descriptions;
- ``kiln:serving-settings``: every variable of the server in the image, from the metadata of
  ``ServingConfig``, ``ServerSettings`` and ``ConnectionLimits``;
- ``kiln:cli``: every command of ``kiln``, from the typer app.

Nothing generated is committed, so no generated page can go stale. An unknown marker, a
marker that no page uses, a setting without a description and a command without help each
stop the build (``mkdocs build --strict`` runs in scripts/test.sh).
"""

from __future__ import annotations

import dataclasses
import html
import re
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"^<!-- kiln:([a-z-]+) -->$", re.MULTILINE)


# -- settings -------------------------------------------------------------------------


def settings_rows() -> list[tuple[str, str, str, str]]:
    """(variable, type, default, description) for every field of KilnSettings."""
    from kiln.config.settings import ENV_PREFIX, KilnSettings

    rows = []
    for name, info in KilnSettings.model_fields.items():
        variable = f"{ENV_PREFIX}{name.upper()}"
        if not (info.description or "").strip():
            raise PluginError(f"{variable} has no description (KilnSettings.{name})")
        kind = type_name(info.annotation) + constraints(info.metadata)
        rows.append((variable, kind, shown_default(info.default), info.description or ""))
    return rows


def type_name(annotation: Any) -> str:
    """A type as a reader wants it: `one of a, b`, `path`, `integer`, `(optional)`."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:  # an optional port: its bounds
        return type_name(args[0]) + constraints(list(args[1:]))
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(f"`{arg}`" for arg in args)
    if type(None) in args:
        inner = [arg for arg in args if arg is not type(None)]
        return f"{type_name(inner[0])} (optional)"
    names = {str: "text", int: "integer", float: "number", bool: "boolean", Path: "path"}
    if annotation in names:
        return names[annotation]
    if typing.get_origin(annotation) is tuple:
        return "list of text"
    raise PluginError(f"no reference name for the type {annotation!r}")


def constraints(metadata: list[Any]) -> str:
    """The bounds pydantic checks, as `, 1 to 65535` or `, at least 0`."""
    bounds: dict[str, Any] = {}
    for item in metadata:
        for key in ("ge", "gt", "le", "lt", "min_length", "pattern"):
            value = getattr(item, key, None)
            if value is not None:
                bounds[key] = value
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le", bounds.get("lt"))
    if low is not None and high is not None and "gt" not in bounds:
        return f", {low:g} to {high:g}"
    parts = []
    if "ge" in bounds:
        parts.append(f"at least {bounds['ge']:g}")
    if "gt" in bounds:
        parts.append(f"above {bounds['gt']:g}")
    if "le" in bounds:
        parts.append(f"at most {bounds['le']:g}")
    if "min_length" in bounds:
        parts.append("not empty")
    if "pattern" in bounds:
        parts.append(f"matching {code(bounds['pattern'])}")
    return ", " + ", ".join(parts) if parts else ""


def shown_default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return ", ".join(f"`{item}`" for item in value)
    return f"`{value}`"


def serving_rows() -> list[tuple[str, str, str, str]]:
    """(variable, type, default, description) for the server's settings classes."""
    from serving.config import ServingConfig
    from serving.server_settings import ConnectionLimits, ServerSettings

    rows: dict[str, tuple[str, str, str, str]] = {}
    for cls in (ServingConfig, ServerSettings, ConnectionLimits):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[field.name]):
                continue  # a nested group of settings, documented field by field
            meta = field.metadata
            if not meta.get("env") or not meta.get("doc"):
                raise PluginError(f"{cls.__name__}.{field.name} names no variable or no doc")
            default = meta.get("shown") or shown_default(field.default)
            rows.setdefault(
                meta["env"], (meta["env"], type_name(hints[field.name]), default, meta["doc"])
            )
    return list(rows.values())


def table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
    for variable, kind, default, doc in rows:
        lines.append(f"| `{variable}` | {kind} | {default} | {cell(doc)} |")
    return "\n".join(lines)


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# -- commands -------------------------------------------------------------------------


def cli_reference() -> str:
    import typer

    from kiln.cli.app import app

    root = typer.main.get_command(app)
    return "\n\n".join(command_section(path, command) for path, command in commands(root))


def commands(command: Any, path: str = "kiln") -> Iterator[tuple[str, Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():  # as the app adds them
        if not sub.hidden:
            yield from commands(sub, f"{path} {name}")


def command_section(path: str, command: Any) -> str:
    """One command: its help, its usage line and a row per argument and option, each as
    `kiln ... --help` renders it (name and type, help and default)."""
    text = (command.help or "").strip()
    if not text:
        raise PluginError(f"`{path}` has no help text (its function's docstring)")
    ctx = command.context_class(command, info_name=path)
    usage = " ".join([path, *command.collect_usage_pieces(ctx)])
    level = "#" * (3 + path.count(" ") // 2)
    parts = [f"{level} `{path}`", "", escape(text), "", "```", usage, "```"]
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:  # hidden
            continue
        name, help_text = record
        if param.param_type_name != "argument" and not help_text.strip():
            raise PluginError(f"`{path}` {name}: an option without help")
        rows.append(f"| {code(name)} | {cell(escape(help_text))} |")
    if rows:
        parts += ["", "| argument or option | description |", "| --- | --- |", *rows]
    return "\n".join(parts)


def code(text: str) -> str:
    """Inline code that may hold `|`, brackets or stars inside a table cell, as HTML with
    every character Markdown would read escaped."""
    escaped = html.escape(text)
    for char in "|[]()*_`":
        escaped = escaped.replace(char, f"&#{ord(char)};")
    return f"<code>{escaped}</code>"


def escape(text: str) -> str:
    """Help text as markdown: angle brackets shown, not taken for HTML."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


# -- the hook -------------------------------------------------------------------------

GENERATORS: dict[str, Callable[[], str]] = {
    "settings": lambda: table(settings_rows()),
    "serving-settings": lambda: table(serving_rows()),
    "cli": cli_reference,
}
_used: set[str] = set()


def on_pre_build(config: Any) -> None:
    _used.clear()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def generated(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise PluginError(f"{page.file.src_uri}: no generator for <!-- kiln:{name} -->")
        _used.add(name)
        return GENERATORS[name]()

    return MARKER.sub(generated, markdown)


def on_post_build(config: Any) -> None:
    unused = sorted(set(GENERATORS) - _used)
    if unused:
        raise PluginError(f"no page shows the generated part(s): {', '.join(unused)}")
