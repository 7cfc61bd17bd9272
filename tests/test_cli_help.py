"""`pirloop --help` and every subcommand's: each option explained, no "<bool>", and prose
wrapped to the terminal rather than broken where the docstring's source lines end."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import typer
from typer.core import TyperOption
from typer.testing import CliRunner

from app.cli import app

WIDTHS = (80, 200)
# Room a help text has on one line at 200 columns, beside the option names or command names.
ONE_LINE_ROOM = 150


def _commands() -> list[tuple[list[str], Any]]:
    """Every command under `pirloop`, the root included, with the words that reach it (typer
    builds them on its own copy of click)."""
    found: list[tuple[list[str], Any]] = []

    def walk(path: list[str], command: Any) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk([*path, name], sub)

    walk([], typer.main.get_command(app))
    return found


COMMANDS = _commands()


def _flat(text: str) -> str:
    """Prose as one line: markdown's code marks dropped, whitespace collapsed."""
    return " ".join(text.replace("`", "").split())


def _paragraphs(help_text: str | None) -> list[str]:
    return [_flat(p) for p in inspect.cleandoc(help_text or "").split("\n\n") if p.strip()]


def _help(path: list[str], width: int) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_is_covered() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "serve", "experiment", "simulate", "demo", "db upgrade", "db downgrade"} <= names


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(
    ("path", "command"),
    [pytest.param(path, command, id=" ".join(["pirloop", *path])) for path, command in COMMANDS],
)
def test_help_explains_every_option_and_wraps_its_prose(
    path: list[str], command: Any, width: int
) -> None:
    output = _help(path, width)
    assert "<bool>" not in output
    assert max(len(line) for line in output.splitlines()) <= width
    options = [p for p in command.params if isinstance(p, TyperOption) and "--help" not in p.opts]
    for option in options:
        assert (option.help or "").strip(), f"pirloop {' '.join(path)} {option.opts[0]}: no help"
        assert option.opts[0] in output
    # Nothing is lost in the wrapping...
    flat = _flat(output.replace("│", " "))
    texts = _paragraphs(command.help) + [_flat(o.help or "") for o in options]
    texts += [_paragraphs(sub.help)[0] for sub in getattr(command, "commands", {}).values()]
    for text in texts:
        assert text in flat, text
    # ...and a text that fits on one line is on one line: no break where a docstring's source
    # line happened to end.
    if width == max(WIDTHS):
        lines = [_flat(line.replace("│", " ")) for line in output.splitlines()]
        for text in texts:
            if len(text) <= ONE_LINE_ROOM:
                assert any(text in line for line in lines), f"broken over lines: {text!r}"
