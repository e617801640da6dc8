"""The rich console every table on stdout goes through: on a terminal as wide as the terminal; piped
or redirected as wide as its content (identifiers are never cut to an assumed 80 columns); a closed
pipe raises ``BrokenPipeError`` for the CLI to end quietly (rich itself would exit with status 1)."""

from __future__ import annotations

from typing import Any

PIPED_WIDTH = 10_000     # wide enough for any table; rich pads nothing beyond the content


def stdout_console(**kw: Any):
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    console = _Console(**kw)
    if not console.is_terminal and "width" not in kw:
        console = _Console(width=PIPED_WIDTH, **kw)
    return console
