"""Named choices (toolkit.named): one table a kind of thing, read by config checks, lookups and the CLI."""
from __future__ import annotations

import re

import pytest

from toolkit.cli import main
from toolkit.errors import UnknownNameError, UsageError
from toolkit.named import Names
from toolkit.runner.executors import EXECUTORS
from toolkit.workbench import losses
from toolkit.workbench.device import PRECISIONS
from toolkit.workbench.optim import OPTIMIZERS, RECOVERY_LRS, REGULARIZERS, SCHEDULES
from toolkit.workbench.recipes import RECIPES


def test_register_get_list_and_describe():
    shapes: Names[int] = Names("shape")
    assert shapes.register("square", "four equal sides", 4) == 4

    @shapes.register("triangle", "three sides")
    def three() -> int:
        return 3

    assert shapes.get("square") == 4 and shapes["triangle"]() == 3
    assert shapes.names() == list(shapes) == ["square", "triangle"] and len(shapes) == 2
    assert "square" in shapes and "circle" not in shapes
    assert shapes.describe() == {"square": "four equal sides", "triangle": "three sides"}
    assert shapes.listing() == "square or triangle" and shapes.check("square") == "square"
    with pytest.raises(ValueError, match="shape 'square' is registered twice"):
        shapes.register("square", "again", 5)


def test_an_unknown_name_is_a_usage_error_listing_the_known_ones_in_order():
    shapes: Names[int] = Names("shape", hint="(or draw one)")
    for name, sides in (("triangle", 3), ("square", 4), ("pentagon", 5)):
        shapes.register(name, f"{sides} sides", sides)
    with pytest.raises(UnknownNameError) as info:
        shapes.get("circle")
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2
    assert str(info.value) == "unknown shape 'circle'; known: triangle, square, pentagon (or draw one)"
    assert info.value.known == ["triangle", "square", "pentagon"]


def _help(argv: list[str], capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "2000")  # one line an option: no name broken at a hyphen
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_train_help_lists_every_registered_method_name(capsys, monkeypatch):
    text = _help(["train"], capsys, monkeypatch)
    lines = {block.split()[0]: " ".join(block.split()) for block in re.split(r"\n  (?=--)", text)}
    assert f"{', '.join(losses.LOSSES)}, or a sum" in lines["--loss"]
    for option, names in (("--recipe", RECIPES), ("--optimizer", OPTIMIZERS), ("--schedule", SCHEDULES),
                          ("--sparsity-regularizer", REGULARIZERS)):
        assert names.listing() in lines[option], option
    for name, about in RECOVERY_LRS.describe().items():
        assert f"{name}: {about}" in lines["--recovery-lr"]
    assert f"{{{','.join(PRECISIONS)}}}" in lines["--precision"]
    assert EXECUTORS.names() == ["local", "ray"] and "local: " in _help(["compare"], capsys, monkeypatch)


def test_a_name_added_to_a_table_shows_up_in_the_help(capsys, monkeypatch):
    more = Names("loss")
    for name, about in losses.LOSSES.describe().items():
        more.register(name, about, losses.LOSSES.get(name))
    more.register("boundary", "a test's own loss", losses.LOSSES.get("dice"))
    monkeypatch.setattr(losses, "LOSSES", more)
    assert "lovasz, ce, boundary, or a sum such as dice+ce" in _help(["train"], capsys, monkeypatch)


def test_a_name_outside_the_choices_is_refused_by_the_cli(capsys):
    with pytest.raises(SystemExit) as done:
        main(["compare", "--executor", "slurm"])
    assert done.value.code == 2 and re.search(r"choose from '?local'?, '?ray'?", capsys.readouterr().err)
