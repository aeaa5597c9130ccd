"""The one exception a command shows its user as one or two plain lines (a traceback only with ``--debug``)."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: ``message`` says what is wrong, ``hint`` what to do about it."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def lines(self) -> list[str]:
        return [self.message] + ([self.hint] if self.hint else [])
