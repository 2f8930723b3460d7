"""Every command's ``--help`` is readable on an 80-column terminal: no option name is cut (issue 16 saw
``--skip-benchma…``), and no line is wider than the terminal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer.main
from typer.testing import CliRunner

from modelyard.cli import app
from tests.conftest import run_cli


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, group
    if hasattr(group, "list_commands"):  # a group (typer may ship its own copy of click)
        ctx = type(group).context_class(group)
        for name in group.list_commands(ctx):
            sub = group.get_command(ctx, name)
            assert sub is not None
            yield from _commands(sub, (*path, name))


def test_every_commands_help_at_80_columns_shows_every_option_name_whole() -> None:
    runner = CliRunner()
    checked = 0
    for path, command in _commands(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
        assert result.exit_code == 0, (path, result.output)
        out = result.output
        assert "…" not in out, (path, out)
        assert max(map(len, out.splitlines())) <= 80, (path, out)
        for param in command.params:
            for name in (*param.opts, *param.secondary_opts):
                if name.startswith("-"):
                    assert name in out, (path, name, out)
        checked += 1
    assert checked > 30  # every verb and sub-command, the groups too


def test_the_real_cli_at_80_columns_prints_the_long_option_names() -> None:
    result = run_cli("check", "--help", COLUMNS="80")
    assert result.returncode == 0, result.stderr
    for name in ("--skip-benchmark", "--allow-removed-columns", "--max-row-rel-diff", "--latency-calls"):
        assert name in result.stdout, result.stdout
