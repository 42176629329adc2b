"""What every entry point shares: flags built from the dataclass they fill, errors and warnings.

A user's mistake (an AvasrError: a bad manifest, config, file or space) ends with
one clear line on stderr and exit status 1. Every other exception (a torch shape mismatch, an out-of-memory) is not
the user's to fix and keeps its traceback. A warning (a video with no face, an index that cannot be saved) is one
line too, `warning: <message>`, without the source line that raised it."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from avasr.errors import AvasrError

FAILED = 1


def run(main: Callable[[], object]) -> None:
    shown_before, warnings.showwarning = warnings.showwarning, show_warning
    try:
        status = main()
    except AvasrError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        raise SystemExit(FAILED) from None
    finally:
        warnings.showwarning = shown_before
    raise SystemExit(status if isinstance(status, int) else 0)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warnings.showwarning` for a person at a terminal: `warning: <message>` on one line. Python's own format adds
    the file, line number and source line that raised it, which say nothing to someone running a command."""
    text = " ".join(str(message).split())
    try:
        (file or sys.stderr).write(f"warning: {text}\n")
    except (AttributeError, OSError):  # no stderr, or a closed one: a warning must not end the run
        pass


# --- flags built from a dataclass --------------------------------------------------------------------------------
def field_comments(cls: type) -> dict[str, str]:
    """Each field's why-comment in the class's source (trailing, or the comment lines right above it): the --help
    text of its flag, so a flag is documented where its field is."""
    comments: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("# ")
            above = [] if text.startswith("---") else above + [text]  # "# --- data ---": a section, not a field's
            continue
        match = _FIELD_LINE.match(line)
        if match:
            comments[match["name"]] = " ".join(above + [match["comment"] or ""]).strip()
        above = []
    return comments


_FIELD_LINE = re.compile(r"^\s+(?P<name>\w+): [^#]*?(?:#\s*(?P<comment>.*))?$")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    fields: Iterable[str] | None = None,
    defaults: dict | None = None,
    choices: dict[str, Sequence] | None = None,
    keep_defaults: bool = True,
) -> None:
    """`--<field-name>` (dashes) for each of `fields` (default: all) of dataclass `cls`, typed from its annotation,
    documented by its comment. A bool defaulting to True becomes `--no-<name>`, one defaulting to False a switch;
    a tuple takes several values. `defaults` overrides (or supplies, for fields without one) the dataclass's
    defaults; with keep_defaults=False every default is None, so only the flags given are set."""
    hints, comments = typing.get_type_hints(cls), field_comments(cls)
    defaults, choices = defaults or {}, choices or {}
    wanted = None if fields is None else set(fields)
    for f in dataclasses.fields(cls):
        if wanted is not None and f.name not in wanted:
            continue
        hint = _without_none(hints[f.name])
        default = defaults.get(f.name, f.default)
        shown = "" if default in (dataclasses.MISSING, None) else f" (default: {_show(default)})"
        help_text = (comments.get(f.name, "") + shown).strip().replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        if hint is bool:
            on = default is not True
            parser.add_argument(
                flag if on else "--no-" + f.name.replace("_", "-"),
                dest=f.name,
                action="store_true" if on else "store_false",
                help=comments.get(f.name, "") if on else f"do not: {comments.get(f.name, '')}",
                default=default if keep_defaults else None,
            )
            continue
        kwargs = {
            "type": hint,
            "choices": choices.get(f.name),
            "help": help_text,
            "default": (None if default is dataclasses.MISSING else default) if keep_defaults else None,
        }
        if typing.get_origin(hint) is tuple:
            kwargs |= {"type": typing.get_args(hint)[0], "nargs": "+", "action": _StoreTuple}
        parser.add_argument(flag, **kwargs)


class _StoreTuple(argparse.Action):
    """nargs="+" gives a list; the dataclass field is a tuple."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, tuple(values))


def _without_none(hint):
    """`X | None` -> X."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint


def _show(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else repr(value)
