"""The README and the guides in docs/ show commands that run as written.

Every fenced code block is read. A `python <script>.py --flag ...` command must name a script that exists, and every
`--flag` it passes must be one the script's `--help` lists; a `make <target>` command must name a target of the
Makefile. Every relative link and image must point at a file, and a `#section` at a heading of that file.

Each script's --help runs once, all of them in one subprocess (each imports torch: one import serves them all).
"""

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SCRIPT = re.compile(r"(?:^|\s)(?:\S*/)?python3?\s+(?P<script>[\w./-]+\.py)\b(?P<args>.*)")
MAKE = re.compile(r"^make\s+(?P<target>[\w-]+)")
FLAG = re.compile(r"^\[?(?P<flag>--[A-Za-z][\w-]*)")
SHELL_END = re.compile(r"\s(?:>|\||&&|;|2>)\s.*")  # redirections and pipes end a command's own arguments
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")
TARGET = re.compile(r"^(?P<name>[\w-]+)\s*:(?!=)", re.MULTILINE)

# Runs each script given on the command line with --help, in this one process, and prints {script: [flags]}: the
# option strings of the parser whose help was printed (not the flags its description happens to mention).
HELP_PROBE = """
import argparse, contextlib, io, json, runpy, sys
found, printed = {}, []
original = argparse.ArgumentParser.print_help
def record(parser, file=None):
    printed.append(sorted(o for o in parser._option_string_actions if o.startswith("--")))
argparse.ArgumentParser.print_help = record
for script in sys.argv[1:]:
    printed.clear()
    sys.argv = [script, "--help"]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            runpy.run_path(script, run_name="__main__")
    except SystemExit:
        pass
    except Exception as e:
        found[script] = f"{type(e).__name__}: {e}"
        continue
    found[script] = printed[0] if printed else "printed no --help"
print(json.dumps(found))
"""


def code_lines(doc: Path) -> list[str]:
    """The lines of a document's fenced code blocks, continuation lines (ending in a backslash) joined."""
    lines = []
    for block in FENCE.findall(doc.read_text(encoding="utf-8")):
        lines.extend(block.replace("\\\n", " ").splitlines())
    return lines


def without_comment(line: str) -> str:
    return re.sub(r"(^|\s)#.*", "", line)


def python_commands() -> list[tuple[str, str, list[str]]]:
    """(document, script, flags) for every `python <script>.py` command of the docs."""
    commands = []
    for doc in DOCS:
        for line in code_lines(doc):
            match = SCRIPT.search(without_comment(line))
            if not match:
                continue
            args = SHELL_END.sub("", match["args"]).split()
            if "--" in args:  # what follows a bare -- is passed on to another program
                args = args[: args.index("--")]
            flags = [m["flag"] for m in map(FLAG.match, args) if m]
            commands.append((doc.relative_to(ROOT).as_posix(), match["script"], flags))
    return commands


def make_commands() -> list[tuple[str, str]]:
    return [
        (doc.relative_to(ROOT).as_posix(), m["target"])
        for doc in DOCS
        for line in code_lines(doc)
        if (m := MAKE.match(without_comment(line).strip()))
    ]


@cache
def script_flags() -> dict[str, list[str] | str]:
    """Each documented script's --help flags (or why there are none), from one subprocess."""
    scripts = sorted({script for _, script, _ in python_commands() if (ROOT / script).is_file()})
    result = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, *scripts], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_the_docs_show_commands():
    assert len(python_commands()) > 20 and len(make_commands()) >= 2  # the parsing above still finds them


@pytest.mark.parametrize(
    "doc, script, flags",
    [pytest.param(*command, id=f"{command[0]}:{command[1]}:{i}") for i, command in enumerate(python_commands())],
)
def test_a_documented_command_runs_its_script_with_flags_it_accepts(doc, script, flags):
    assert (ROOT / script).is_file(), f"{doc}: {script} does not exist"
    accepted = script_flags()[script]
    assert isinstance(accepted, list), f"{doc}: {script} --help failed: {accepted}"
    unknown = [flag for flag in flags if flag not in accepted]
    assert not unknown, f"{doc}: {script} does not accept {', '.join(unknown)}"


@pytest.mark.parametrize("doc, target", make_commands())
def test_a_documented_make_target_exists(doc, target):
    targets = set(TARGET.findall((ROOT / "Makefile").read_text(encoding="utf-8")))
    assert target in targets, f"{doc}: `make {target}`: no such target in the Makefile"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    text = FENCE.sub("", doc.read_text(encoding="utf-8"))
    return {slug(m[1]) for m in re.finditer(r"^#+\s+(.*)$", text, re.MULTILINE)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_every_relative_link_and_image_points_at_a_file_and_heading(doc):
    broken = []
    for match in LINK.finditer(FENCE.sub("", doc.read_text(encoding="utf-8"))):
        target = match["target"]
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)
