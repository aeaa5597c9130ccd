"""``sentiment``: one command line for every part of the scorer. ``sentiment COMMAND --help`` tells more.

The commands live in ``sentiment/commands/``, one module per family (``FAMILIES`` below), each declaring its
arguments beside the code that runs them. This module holds what every command shares: ``main()``, the global
``--debug`` option, the grouped ``sentiment --help``, the "did you mean" line for a mistyped command, and how an
error is shown (one or two lines; the traceback with --debug).
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import sys
import textwrap
from importlib import import_module

from core.errors import UserError
from core.messages import first_line, redact, redact_log_records
from sentiment.commands.options import SETTING_OPTIONS, settings_from  # noqa: F401 - importable from here, as before

# The command families, in the order `sentiment --help` shows them: sentiment/commands/<name>.py.
FAMILIES = ("stream", "db", "model", "study", "local")

DESCRIPTION = (
    "Score a live stream of movie reviews. Settings come from SENTIMENT_* environment variables "
    "(see `sentiment settings`); options override them."
)


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


class CommandParser(argparse.ArgumentParser):
    """An argument parser that names the closest command to a mistyped one, and (at the top) groups its help."""

    families: list[tuple[str, list[str]]] | None = None  # (title, commands), set on the top-level parser only

    def _check_value(self, action, value):
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            self.exit(2, no_command_line(self, value) + "\n")
        super()._check_value(action, value)

    def format_help(self) -> str:
        if not self.families:
            return super().format_help()
        return grouped_help(self)


def _command_lines(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, str]]:
    """(``name`` or ``name action``, its one-line help) for each command under ``parser``, in order."""
    sub = _subcommands(parser)
    if sub is None:
        return []
    lines = []
    for choice in sub._choices_actions:
        name = f"{prefix}{choice.dest}"
        nested = _command_lines(sub.choices[choice.dest], prefix=f"{name} ")
        lines += nested or [(name, choice.help or "")]
    return lines


def grouped_help(parser: CommandParser) -> str:
    """``sentiment --help``: the commands by family, one line each, like git's."""
    width = min(shutil.get_terminal_size().columns, 120) - 2
    helps = dict(_command_lines(parser))
    rows = []  # (title, [(name, help)])
    for title, commands in parser.families or []:
        rows.append((title, [(n, h) for n, h in helps.items() if n.split()[0] in commands]))
    options = [(", ".join(a.option_strings), a.help or "") for a in parser._actions if a.option_strings]
    column = max(len(name) for _, lines in rows for name, _ in lines) + 5  # 3 of indent, 2 of gap
    out = [parser.format_usage().rstrip(), "", *textwrap.wrap(DESCRIPTION, width), ""]
    for title, lines in [*rows, ("options", options)]:
        out.append(title)
        for name, text in lines:
            out += textwrap.wrap(
                text, width, initial_indent=f"   {name:<{column - 3}}", subsequent_indent=" " * column
            ) or [f"   {name}"]
    out += ["", "'sentiment COMMAND --help' tells more about a command and its options."]
    return "\n".join(out) + "\n"


def no_command_line(parser: argparse.ArgumentParser, value: str) -> str:
    """One line for a command that is not one: the closest command, or where the list is."""
    path = parser.prog.split()[1:]  # [] at the top, ["model"] under `sentiment model`
    typed = " ".join([*path, value])
    if path:  # a mistyped action: the closest of this command's own actions
        candidates = {name.split()[-1]: name for name, _ in _command_lines(parser, prefix=f"{' '.join(path)} ")}
    else:  # a mistyped command: the closest command, or the closest action of any command (`promte`)
        candidates = {}
        for name, _ in _command_lines(parser):
            words = name.split()
            candidates.setdefault(words[0], words[0])
            if len(words) > 1:
                candidates.setdefault(words[-1], name)
    close = difflib.get_close_matches(value.lower(), list(candidates), n=1, cutoff=0.6)
    if close:
        return f"sentiment: no command {typed!r}; did you mean {candidates[close[0]]!r}?"
    where = " ".join(["sentiment", *path])
    return f"sentiment: no command {typed!r}; '{where} --help' lists them"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="sentiment", description=DESCRIPTION)
    parser.families = []
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in FAMILIES:
        module = import_module(f"sentiment.commands.{family}")
        before = set(sub.choices)
        module.register(sub)
        parser.families.append((module.TITLE, [name for name in sub.choices if name not in before]))
    return parser


def _add_debug(parser: argparse.ArgumentParser, default) -> None:
    """``--debug`` on every command and subcommand (a subcommand's own default must not undo the outer one)."""
    parser.add_argument("--debug", action="store_true", default=default, help="show the traceback of an error")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_debug(child, argparse.SUPPRESS)


def _log_level_is_debug() -> bool:
    """SENTIMENT_LOG_LEVEL=debug also shows tracebacks (not when the settings themselves are invalid: that error
    is the one to show)."""
    from pydantic import ValidationError

    from core.settings import Settings

    try:
        return Settings().log_level.lower() == "debug"
    except (ValidationError, UserError):
        return False


def main(argv: list[str] | None = None) -> int:
    redact_log_records()  # whoever logs a URL or a setting, its password is masked
    parser = build_parser()
    _add_debug(parser, default=False)
    args = parser.parse_args(argv)
    debug = args.debug or _log_level_is_debug()
    action = getattr(args, "model_command", None)  # `sentiment model promote: ...`: the action is part of the name
    name = f"sentiment {args.command}" + (f" {action}" if action else "")
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except UserError as exc:
        if debug:
            return _traceback(exc.exit_code)
        lines = exc.lines()
        print(f"{name}: {redact(lines[0])}", file=sys.stderr)
        for line in lines[1:]:
            print(f"  {redact(line)}", file=sys.stderr)
        return exc.exit_code
    except (FileNotFoundError, ValueError, OSError) as exc:
        if debug:
            return _traceback(1)
        print(f"{name}: {redact(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback with --debug
        if debug:
            return _traceback(1)
        print(f"{name}: unexpected {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        print("  run it again with --debug for the traceback, and report it", file=sys.stderr)
        return 1


def _traceback(exit_code: int) -> int:
    """The traceback of the error being handled, secrets masked (a driver's message may quote its URL)."""
    import traceback

    print(redact(traceback.format_exc()), file=sys.stderr, end="")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
