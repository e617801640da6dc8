"""The one exception type for bad user input: a one-line cause plus a one-line fix.

The CLI catches :class:`UserError`, prints ``error: <cause>`` and ``  fix: <fix>`` to stderr and
exits with status 2 -- never a traceback. Library callers get structured fields.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can correct. ``cause`` says what is wrong, ``fix`` what to do."""

    def __init__(self, cause: str, fix: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.fix = fix

    def __str__(self) -> str:
        return self.cause if not self.fix else f"{self.cause} (fix: {self.fix})"
