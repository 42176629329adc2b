"""Flags built from the dataclass they fill: types, defaults, switches and help from the fields' comments."""

import argparse
import dataclasses
from dataclasses import dataclass

import pytest

from avasr.cli import add_dataclass_arguments, field_comments
from avasr.sweep.driver import SweepOptions


@dataclass(frozen=True)
class Options:
    path: str  # where it goes
    # why the size is what it is,
    # on two lines
    size: int = 3
    ratio: float | None = None  # None: chosen for you
    sizes: tuple[int, ...] = (1, 2)
    # --- a section -----------------------------------------------------------------------------------------------
    ship: bool = True  # export the result
    resume: bool = False


def parser_for(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, Options, **kwargs)
    return parser


def test_comments_above_or_beside_a_field_are_its_help_and_sections_are_not():
    assert field_comments(Options) == {
        "path": "where it goes",
        "size": "why the size is what it is, on two lines",
        "ratio": "None: chosen for you",
        "sizes": "",
        "ship": "export the result",
        "resume": "",
    }


def test_flags_parse_into_the_dataclass_with_its_defaults():
    args = parser_for(defaults={"path": "p"}).parse_args([])
    assert Options(**vars(args)) == Options(path="p")
    args = parser_for(defaults={"path": "p"}).parse_args(
        ["--size", "5", "--ratio", "0.5", "--sizes", "3", "4", "--no-ship", "--resume", "--path", "q"]
    )
    assert Options(**vars(args)) == Options(path="q", size=5, ratio=0.5, sizes=(3, 4), ship=False, resume=True)


def test_without_kept_defaults_only_given_flags_are_set_and_fields_can_be_picked():
    args = parser_for(keep_defaults=False, fields=("size", "ship")).parse_args(["--size", "4"])
    assert vars(args) == {"size": 4, "ship": None}
    with pytest.raises(SystemExit):
        parser_for(fields=("size",)).parse_args(["--ratio", "1"])  # not asked for: no such flag


def test_help_shows_the_comment_and_the_default(capsys):
    with pytest.raises(SystemExit):
        parser_for().parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--size SIZE why the size is what it is, on two lines (default: 3)" in shown
    assert "--no-ship do not: export the result" in shown and "--sizes SIZES [SIZES ...] (default: 1 2)" in shown


def test_every_sweep_option_has_a_flag_with_its_default():
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, SweepOptions, defaults={"train_manifest": "t", "val_manifest": "v"})
    assert SweepOptions(**vars(parser.parse_args([]))) == SweepOptions("t", "v")
    assert {f.name for f in dataclasses.fields(SweepOptions)} == set(vars(parser.parse_args([])))
