"""avasr's own errors share one base class, AvasrError: the entry points print those as one line and exit 1;
every other exception (a programming error) keeps its traceback."""

import importlib
import inspect
import pkgutil
import sys

import pytest
import torch

import avasr
from avasr import cli
from avasr.config import ConfigError
from avasr.errors import AvasrError


def exception_classes() -> list[type]:
    """Every exception class defined in a module of the avasr package, each module imported."""
    found = []
    for module in pkgutil.walk_packages(avasr.__path__, "avasr."):
        members = inspect.getmembers(importlib.import_module(module.name), inspect.isclass)
        found += [c for _, c in members if issubclass(c, BaseException) and c.__module__ == module.name]
    return found


def test_every_avasr_error_is_an_avasr_error_and_keeps_a_builtin_base():
    classes = exception_classes()
    assert {"ConfigError", "ManifestError", "NoFaceError", "ParityError"} <= {c.__name__ for c in classes}
    assert [f"{c.__module__}.{c.__name__}" for c in classes if not issubclass(c, AvasrError)] == []
    assert [
        c.__name__
        for c in classes
        if c is not AvasrError
        and not any(b.__module__ == "builtins" and b not in (Exception, BaseException, object) for b in c.__mro__[1:])
    ] == []


def test_cli_prints_an_avasr_error_as_one_line_and_exits_1(monkeypatch, capsys):
    def main():
        raise ConfigError("settings.json: cannot read configuration: [Errno 2] No such file or directory")

    monkeypatch.setattr(sys, "argv", ["train.py"])
    with pytest.raises(SystemExit) as stop:
        cli.run(main)
    assert stop.value.code == cli.FAILED == 1
    assert capsys.readouterr().err == (
        "train.py: error: settings.json: cannot read configuration: [Errno 2] No such file or directory\n"
    )


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        ValueError("too many values to unpack (expected 2)"),
        FileNotFoundError(2, "No such file or directory", "/tmp/checkpoint.pth"),
    ],
    ids=type,
)
def test_cli_lets_any_other_error_through_with_its_traceback(error):
    def main():
        raise error

    with pytest.raises(type(error)) as raised:
        cli.run(main)
    assert raised.value is error
