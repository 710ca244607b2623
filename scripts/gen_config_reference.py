"""Generate docs/config-reference.md from the code, so the reference cannot drift.

Every key comes from an attrs class: ``[retry]`` from
:class:`mux_core.RetryPolicy`, each transport's and sink's keys from its
``Options`` class (loaded through the plugin manager's entry points, built-ins
only). Descriptions are the ``#:`` comments above each field, read with
:mod:`ast` from the class source.

    python scripts/gen_config_reference.py           # rewrite the file
    python scripts/gen_config_reference.py --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs

from mux_core import config as _config
from mux_core.plugins import PluginManager, Provided
from mux_core.retry import RetryPolicy
from mux_core.sinks import DEFAULT_BUFFER_BYTES, Overflow

__all__ = ["Field", "field_comments", "generate", "main", "options_fields"]

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "config-reference.md"
REGENERATE = "python scripts/gen_config_reference.py"

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
    annotated assignment, joined into one paragraph.
    """
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    tree = ast.parse(source)
    class_def = tree.body[0]
    assert isinstance(class_def, ast.ClassDef)
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


def options_fields(cls: type[Any]) -> list[Field]:
    """The documented fields of an attrs options class, in declaration order."""
    comments = field_comments(cls)
    fields = []
    for field in attrs.fields(cls):
        annotation, description = comments.get(field.name, ("", ""))
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
    return _toml(default)


def _toml(value: Any) -> str:
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


def _table(fields: list[Field]) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for field in fields:
        description = _markdown(field.description).replace("|", "\\|")
        rows.append(f"| `{field.name}` | {field.type} | {field.default} | {description} |")
    return rows


def _markdown(text: str) -> str:
    """reST inline literals (``x``) as Markdown code spans (`x`)."""
    return text.replace("``", "`")


def _source_path(cls: type[Any]) -> str:
    path = Path(inspect.getsourcefile(cls) or "").resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return path.name


def _first_paragraph(doc: str | None) -> str:
    text = inspect.cleandoc(doc or "")
    return " ".join(text.split("\n\n")[0].split())


_HEADER = """\
# Config reference

<!-- Generated by scripts/gen_config_reference.py from the code: do not edit.
     Run `{regenerate}` after changing an option. -->

A config file is TOML with four parts: an optional `[retry]` table, one
`[[sources]]` table per stream, any number of `[[sinks]]` tables and any
number of `[[processors]]` tables. Unknown
keys, wrong types and missing required keys are errors with file and line,
reported by `mux check` before any network I/O.

Every string value may use environment variables: `${{NAME}}` (an error when
`NAME` is unset), `${{NAME:-default}}` (the default when unset or empty), and
`$${{` for a literal `${{`. Values taken from the environment, `headers`
values and URL passwords are shown as `***` by `mux check`.

This page is generated from the code; the [user guide](user-guide.md)
explains the policies behind these keys.
"""

_SOURCE_KEYS = [
    Field("name", "string", "required", "The source's name, unique in the file; in every record."),
    Field("transport", "string", "required", "The transport: a section below, or a plugin's."),
    Field("retry", "table", "`{}`", "`[retry]` keys overriding the shared policy for this source."),
]


def _sink_keys() -> list[Field]:
    overflows = "one of " + ", ".join(f'"{policy.value}"' for policy in Overflow)
    return [
        Field("type", "string", "required", "The sink type: a section below, or a plugin's."),
        Field("name", "string", "the type", "Unique among sinks; needed for two of one type."),
        Field(
            "overflow",
            overflows,
            "per type",
            "What happens when this sink falls behind: see "
            "[overflow policies](user-guide.md#overflow-policies).",
        ),
        Field("buffer", "integer", _toml(_config._DEFAULT_BUFFER), "Channel capacity, in records."),
        Field(
            "buffer_bytes",
            "integer",
            _toml(DEFAULT_BUFFER_BYTES),
            "Channel capacity in payload bytes (an estimate), besides records: big events"
            " and a slow sink cannot grow memory without bound.",
        ),
        Field(
            "on_error",
            'one of "stop", "drop"',
            "per type",
            'When the sink fails: "stop" the run (exit code 1) or "drop" the sink and go on.',
        ),
    ]


_PROCESSOR_KEYS = [
    Field("type", "string", "required", "The processor type: a section below, or a plugin's."),
    Field(
        "sources",
        "array of strings",
        "every source",
        'Source names or globs (`"train-*"`) this processor runs on; each gets its own state.',
    ),
]


def _plugin_section(kind: str, provided: Provided) -> list[str]:
    cls = provided.cls
    options = getattr(cls, "Options", None)
    lines = [f'### `{"transport" if kind == "transport" else "type"} = "{provided.name}"`', ""]
    # The class docstring's first sentence, without pointers into the code.
    summary = _markdown(_first_paragraph(cls.__doc__).split("; see ")[0].rstrip(".")) + "."
    if summary != ".":
        lines += [summary, ""]
    lines.append(f"Plugin `{provided.plugin}`, source `{_source_path(cls)}`.")
    if kind == "sink":
        overflow = getattr(cls, "default_overflow", "block")
        on_error = getattr(cls, "default_on_error", "stop")
        lines.append(f'Defaults: `overflow = "{overflow}"`, `on_error = "{on_error}"`.')
    lines.append("")
    if options is None or not attrs.has(options):
        lines += ["No options.", ""]
        return lines
    lines += [*_table(options_fields(options)), ""]
    return lines


def generate(plugins: PluginManager | None = None) -> str:
    """The whole reference page, for the built-in plugins (or ``plugins``)."""
    if plugins is None:
        plugins = PluginManager()
        plugins.load_entry_points(only=set())
    lines = [_HEADER.format(regenerate=REGENERATE)]
    lines += [
        "## `[retry]`: the shared retry policy",
        "",
        f"From `{_source_path(RetryPolicy)}`. Every key is optional; a source's own "
        "`retry` table is merged over this one.",
        "",
        *_table(options_fields(RetryPolicy)),
        "",
    ]
    lines += ["## `[[sources]]`: keys of every source", "", *_table(_SOURCE_KEYS), ""]
    lines += ["The other keys of a source belong to its transport.", ""]
    lines += ["## `[[sinks]]`: keys of every sink", "", *_table(_sink_keys()), ""]
    lines += ["The other keys of a sink belong to its type.", ""]
    lines += ["## Transports", ""]
    for name in sorted(plugins.transports()):
        lines += _plugin_section("transport", plugins.transports()[name])
    lines += ["## Sinks", ""]
    for name in sorted(plugins.sinks()):
        lines += _plugin_section("sink", plugins.sinks()[name])
    lines += [
        "## `[[processors]]`: keys of every processor",
        "",
        "Processors run in file order on each source's batches, in the source's own task, "
        "before the sinks; see [Processors and alerts](processors.md).",
        "",
        *_table(_PROCESSOR_KEYS),
        "",
        "The other keys of a processor belong to its type.",
        "",
        "## Processors",
        "",
    ]
    for name in sorted(plugins.processors()):
        lines += _plugin_section("processor", plugins.processors()[name])
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed file is stale"
    )
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale; run `{REGENERATE}`", file=sys.stderr)
            return 1
        print(f"{OUTPUT.relative_to(ROOT)} is up to date")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
