"""A command's warnings are one line a person reads, `warning: <message>`, not Python's format with the file, line
number and source line that raised them."""

import subprocess
import sys
import warnings

import pytest

from avasr.cli import run, show_warning

ENTRY_POINT = """
import warnings
from avasr.cli import run

def main():
    warnings.warn("clip.mp4: no face in 3 of 3 frames: this utterance runs on its audio alone")
    print("done")

run(main)
"""


def test_a_command_prints_a_warning_as_one_line():
    result = subprocess.run([sys.executable, "-c", ENTRY_POINT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert result.stderr == "warning: clip.mp4: no face in 3 of 3 frames: this utterance runs on its audio alone\n"


def test_show_warning_writes_the_message_alone_on_one_line(capsys):
    show_warning(UserWarning("a.mp4: no face\n  found"), UserWarning, "/x/avasr/data/dataset.py", 132)
    assert capsys.readouterr().err == "warning: a.mp4: no face found\n"


def test_run_shows_warnings_its_way_only_while_the_command_runs():
    before, during = warnings.showwarning, []
    with pytest.raises(SystemExit) as stopped:
        run(lambda: during.append(warnings.showwarning))
    assert stopped.value.code == 0
    assert during == [show_warning]
    assert warnings.showwarning is before
