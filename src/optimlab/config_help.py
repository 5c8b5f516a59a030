"""The meaning of every config key, read from the comments of the config dataclasses (optimlab.config).

The dataclasses are the one source: a field's meaning is its trailing comment (`steps: int = 1000  # ...`)
or, when it has none, the comment block directly above it; a group's meaning is its class docstring's
first paragraph. `optimlab train --help` prints `config_help()`, so help never drifts from the code.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
from typing import Any

from optimlab.config import Config

# What the open-ended groups hold beyond their fixed keys (their keys depend on the chosen name).
_OPEN_GROUPS = {
    "task": "task.<option>=value: the chosen task's own options (`optimlab list tasks`)",
    "optim": "optim.<argument>=value: the optimizer's keyword arguments (`optimlab list optimizers NAME`)",
}
# Fields that hold the open-ended keys: not keys a user writes themselves.
_HIDDEN = {("task", "options"), ("optim", "kwargs")}


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """{field name: its comment} for a dataclass defined in source, parsed once with `tokenize`."""
    source = textwrap.dedent(inspect.getsource(cls))
    names = {f.name for f in dataclasses.fields(cls)}
    comments: dict[str, str] = {}
    above: list[str] = []  # the comment block read since the last statement
    line_start: tuple[str, int] | None = None  # (field name, row) of the statement being read
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if line_start is not None and token.start[0] == line_start[1]:
                comments[line_start[0]] = text  # a trailing comment wins over the block above
            else:
                above.append(text)
        elif token.type == tokenize.NAME and token.start[1] == 4 and token.string in names and line_start is None:
            line_start = (token.string, token.start[0])
            if above:
                comments[token.string] = " ".join(above)
            above = []
        elif token.type == tokenize.NEWLINE:
            line_start = None
        elif token.type not in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT):
            if line_start is None and token.type != tokenize.STRING:
                above = []
    return comments


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def config_keys() -> list[tuple[str, str, str]]:
    """(dotted key, default as written on the command line, meaning) for every key of every group."""
    rows = []
    top = field_comments(Config)
    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(_default(f)):
            group = type(_default(f))
            meanings = field_comments(group)
            for sub in dataclasses.fields(group):
                if (f.name, sub.name) in _HIDDEN:
                    continue
                rows.append((f"{f.name}.{sub.name}", _show(_default(sub)), meanings.get(sub.name, "")))
        else:
            rows.append((f.name, _show(_default(f)), top.get(f.name, "")))
    return rows


def group_meanings() -> dict[str, str]:
    """{group: the first paragraph of its class docstring}."""
    meanings = {}
    for f in dataclasses.fields(Config):
        value = _default(f)
        if dataclasses.is_dataclass(value):
            doc = inspect.getdoc(type(value)) or ""
            written = doc and not doc.startswith(type(value).__name__ + "(")  # not dataclass's signature
            meanings[f.name] = " ".join(doc.split("\n\n")[0].split()) if written else ""  # the first paragraph
    return meanings


def config_help(width: int = 110) -> str:
    """Every config key grouped, with its default and meaning: the text `optimlab train --help` ends with."""
    rows = config_keys()
    groups = group_meanings()
    key_width = max(len(k) + len(d) + 3 for k, d, _ in rows)
    lines = ["config keys (key=value; `group=NAME` is `group.name=NAME`):"]
    current = None
    for key, default, meaning in rows:
        group = key.partition(".")[0] if "." in key else ""
        if group != current:
            current = group
            if group:
                lines.append("")
                lines.append(textwrap.fill(f"  {group}: {groups.get(group, '')}".rstrip(), width=width,
                                           subsequent_indent="    "))
                if group in _OPEN_GROUPS:
                    lines.append(f"    {_OPEN_GROUPS[group]}")
        head = f"    {key}={default}"
        lines.append(textwrap.fill(meaning, width=width, initial_indent=head.ljust(key_width + 6),
                                   subsequent_indent=" " * (key_width + 6)) if meaning else head)
    return "\n".join(lines)

