"""Config reference text from Options classes: ``#:`` comments, types, defaults.

Shared by ``scripts/gen_config_reference.py`` (mux's own page),
``mux plugins --config-reference PLUGIN`` (a third party's page) and
``mux check`` (the description above each key of the resolved config).
Descriptions are the ``#:`` comment lines right above each field, read with
:mod:`ast` from the class source (attrs' convention, Sphinx's too).
"""

from __future__ import annotations

import ast
import inspect
import json
import linecache
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from .._plugins import PluginManager, Provided
from ..options import is_secret
from ..sink import Sink, sink_member

__all__ = [
    "Field",
    "field_comments",
    "options_fields",
    "plugin_reference",
    "plugin_section",
    "table",
    "toml_value",
]

_SCALAR_NAMES = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "list[str]": "array of strings",
    "dict[str, str]": "table of strings",
}


@attrs.frozen
class Field:
    """One documented config key."""

    name: str
    type: str
    default: str
    description: str


def field_comments(cls: type[Any]) -> dict[str, tuple[str, str]]:
    """``{field: (annotation text, description)}`` from the ``#:`` comments of ``cls``.

    A description is the run of ``#:`` lines right above the field's
    annotated assignment, joined into one paragraph. A class whose source
    cannot be read (built at run time, a zipped install) has none.
    """
    try:
        tree, lines = _parse_class(cls)
    except (OSError, TypeError):
        return {}
    class_def = tree.body[0]
    if not isinstance(class_def, ast.ClassDef):
        return {}
    found: dict[str, tuple[str, str]] = {}
    for node in class_def.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        comment: list[str] = []
        index = node.lineno - 2  # the line above, 0-based
        while index >= 0 and lines[index].strip().startswith("#:"):
            comment.insert(0, lines[index].strip()[2:].strip())
            index -= 1
        found[node.target.id] = (ast.unparse(node.annotation), " ".join(comment))
    return found


def _parse_class(cls: type[Any]) -> tuple[ast.Module, list[str]]:
    """The source of ``cls`` parsed, and its lines; raises as inspect.getsource does."""
    source = _class_lines(cls)
    if source is not None:
        try:
            return ast.parse(source), source.splitlines()
        except SyntaxError:
            pass  # cut in the wrong place (a header over several lines): ask inspect
    source = textwrap.dedent(inspect.getsource(cls))
    return ast.parse(source), source.splitlines()


def _class_lines(cls: type[Any]) -> str | None:
    """A module-level class's lines, read from its module without parsing it: from
    the one line ``class NAME(`` or ``class NAME:`` to the next line that starts
    in column 0. None leaves it to inspect.getsource (a nested class, a name
    defined twice).

    inspect.getsource parses the whole module to find a class, for each class,
    and tokenizes the class to find its end: most of ``mux check``'s time once.
    """
    filename = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if not isinstance(filename, str) or cls.__qualname__ != cls.__name__:
        return None
    lines = linecache.getlines(filename)
    header = f"class {cls.__name__}"
    starts = [
        index
        for index, line in enumerate(lines)
        if line.startswith(header) and line[len(header) : len(header) + 1] in ("(", ":")
    ]
    if len(starts) != 1:
        return None
    end = starts[0] + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
        end += 1
    return "".join(lines[starts[0] : end])


def options_fields(cls: type[Any]) -> list[Field]:
    """The documented fields of an attrs options class, in declaration order."""
    comments = field_comments(cls)
    fields = []
    for field in attrs.fields(cls):
        annotation, description = comments.get(field.name, ("", ""))
        if is_secret(field):
            description = f"{description} Secret: shown as `***`.".lstrip()
        fields.append(Field(field.name, _type_text(annotation), _default_text(field), description))
    return fields


def _type_text(annotation: str) -> str:
    """A TOML reader's name for a Python annotation."""
    text = annotation.replace("typing.", "")
    optional = False
    if text.endswith(" | None"):
        text, optional = text[: -len(" | None")], True
    if text.startswith("Literal[") and text.endswith("]"):
        values = ast.literal_eval(f"({text[len('Literal[') : -1]},)")
        shown = "one of " + ", ".join(json.dumps(value) for value in values)
    else:
        shown = _SCALAR_NAMES.get(text, text)
    return f"{shown} (optional)" if optional else shown


def _default_text(field: attrs.Attribute[Any]) -> str:
    default = field.default
    if default is attrs.NOTHING:
        return "required"
    factory = getattr(default, "factory", None)
    if isinstance(default, attrs.Factory) and factory is not None:  # type: ignore[arg-type]
        default = factory()
    return toml_value(default)


def toml_value(value: Any) -> str:
    """A default as a Markdown code span of TOML (``not set`` for None)."""
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str | int | float):
        return f"`{json.dumps(value)}`"
    if isinstance(value, list):
        return "`[" + ", ".join(json.dumps(v) for v in value) + "]`"
    if isinstance(value, dict):
        inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
        return "`{ " + inner + " }`" if inner else "`{}`"
    return f"`{value!r}`"


def table(fields: list[Field]) -> list[str]:
    """A Markdown table of ``fields``: key, type, default, description."""
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for field in fields:
        description = _markdown(field.description).replace("|", "\\|")
        rows.append(f"| `{field.name}` | {field.type} | {field.default} | {description} |")
    return rows


def _markdown(text: str) -> str:
    """reST inline literals (``x``) as Markdown code spans (`x`)."""
    return text.replace("``", "`")


def _first_paragraph(doc: str | None) -> str:
    text = inspect.cleandoc(doc or "")
    return " ".join(text.split("\n\n")[0].split())


def _module_path(cls: type[Any]) -> str:
    """Where a class lives, from its package's folder on (``mux_acme/transport.py``)."""
    path = Path(inspect.getsourcefile(cls) or "")
    top = cls.__module__.split(".")[0]
    parts = path.parts
    return "/".join(parts[parts.index(top) :]) if top in parts else path.name


def plugin_section(
    kind: str, provided: Provided, source_path: Callable[[type[Any]], str] = _module_path
) -> list[str]:
    """The Markdown section of one transport, sink or processor: summary, plugin, keys."""
    cls = provided.cls
    options = getattr(cls, "Options", None)
    lines = [f'### `{"transport" if kind == "transport" else "type"} = "{provided.name}"`', ""]
    # The class docstring's first sentence, without pointers into the code.
    summary = _markdown(_first_paragraph(cls.__doc__).split("; see ")[0].rstrip(".")) + "."
    if summary != ".":
        lines += [summary, ""]
    lines.append(f"Plugin `{provided.plugin}`, source `{source_path(cls)}`.")
    if kind == "sink":
        overflow = sink_member(cls, "default_overflow")
        on_error = sink_member(cls, "default_on_error")
        buffer = sink_member(cls, "default_buffer")
        extra = "" if buffer == Sink.default_buffer else f", `buffer = {buffer}`"
        lines.append(f'Defaults: `overflow = "{overflow}"`, `on_error = "{on_error}"`{extra}.')
    lines.append("")
    if options is None or not attrs.has(options):
        lines += ["No options.", ""]
        return lines
    lines += [*table(options_fields(options)), ""]
    return lines


def plugin_reference(plugins: PluginManager, plugin: str) -> str:
    """A config reference page for one plugin's transports, sinks and processors.

    Raises LookupError naming the installed plugins when ``plugin`` provides
    nothing (not installed, or failed to load).
    """
    kinds = (
        ("transport", "Transports", plugins.transports()),
        ("sink", "Sinks", plugins.sinks()),
        ("processor", "Processors", plugins.processors()),
    )
    lines = [f"# Config reference: plugin `{plugin}`", ""]
    lines += [
        f"<!-- Generated by `mux plugins --config-reference {plugin}` from the code. -->",
        "",
    ]
    found = False
    for kind, title, provided in kinds:
        mine = [provided[name] for name in sorted(provided) if provided[name].plugin == plugin]
        if not mine:
            continue
        found = True
        lines += [f"## {title}", ""]
        for item in mine:
            lines += plugin_section(kind, item)
    if not found:
        names = sorted({p.plugin for _, _, provided in kinds for p in provided.values()})
        failure = next((f for f in plugins.failures if f.plugin == plugin), None)
        if failure is not None:
            raise LookupError(f"plugin {plugin!r} failed to load: {failure.error}")
        raise LookupError(
            f"no plugin {plugin!r} provides a transport, sink or processor; "
            f"installed: {', '.join(names) or 'none'}"
        )
    return "\n".join(lines).rstrip("\n") + "\n"
