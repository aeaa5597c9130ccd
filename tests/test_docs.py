"""The README and docs/ say only what is true of the code: every command they quote parses (subcommands and options),
every SENTIMENT_* setting they name exists, every file and page they link to is there, and the README stays short."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from core.settings import Settings
from sentiment.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

# read from the environment outside the Settings object: by the tests, the test fixtures and the local services
NOT_SETTINGS = {"SENTIMENT_TEST_DATABASE_URL", "SENTIMENT_PG_BIN", "SENTIMENT_DATA_DIR"}


def _code(text: str) -> list[str]:
    """The text of every code span and code block of a Markdown page."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S)
    text = re.sub(r"^```[a-z]*\n.*?^```", "", text, flags=re.M | re.S)
    return blocks + re.findall(r"`([^`\n]+)`", text)


def _commands(text: str) -> list[str]:
    """Every ``sentiment ...`` invocation quoted in code: from the word to the end of its line, a comment, a pipe
    or a shell operator."""
    found = []
    for code in _code(text):
        for line in code.splitlines():
            for match in re.finditer(r"(?:^|[\s(/])sentiment((?:\s+[^\s#|&;)`]+)*)", line):
                found.append("sentiment" + match.group(1))
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def check_command(command: str) -> str | None:
    """Why ``command`` is not one the CLI takes, or None."""
    parser = build_parser()
    tokens = command.split()[1:]
    path = ["sentiment"]
    for token in tokens:
        token = token.strip("[]()")
        subs = _subparsers(parser)
        if subs and token in subs:
            parser = subs[token]
            path.append(token)
            continue
        if path == ["sentiment"] and subs and not token.startswith("-"):
            return f"sentiment has no command {token!r}"
        for part in re.split(r"\\?\||·", token):
            if part.startswith("--"):
                option = part.split("=")[0].rstrip(",.")
                if option not in parser._option_string_actions:
                    return f"{' '.join(path)} has no option {option}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_quoted_command_parses(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    problems = [f"`{cmd}`: {why}" for cmd in _commands(text) if (why := check_command(cmd))]
    assert not problems, f"{page.name} quotes commands the CLI does not take:\n" + "\n".join(problems)


def test_the_command_check_can_fail() -> None:
    assert check_command("sentiment model promote 4c1d --wait 5") is None
    assert check_command("sentiment model promote 4c1d --no-such-flag") is not None
    assert check_command("sentiment frobnicate") is not None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_named_setting_exists(page: Path) -> None:
    settings = {f"SENTIMENT_{name.upper()}" for name in Settings.model_fields} | NOT_SETTINGS
    named = set(re.findall(r"SENTIMENT_[A-Z0-9_]*[A-Z0-9_]", page.read_text(encoding="utf-8")))
    unknown = sorted(
        name
        for name in named
        if name not in settings and not (name.endswith("_") and any(s.startswith(name) for s in settings))
    )
    assert not unknown, f"{page.name} names settings that do not exist: {', '.join(unknown)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_and_path_exists(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            missing.append(target)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            missing.append(target)
    for code in _code(text):
        for path in re.findall(
            r"(?<![\w/.])((?:bench|tests|training|deploy|model|stream|schemas)/[\w./-]+\.\w+)", code
        ):
            if "<" not in path and not (ROOT / path).exists():
                missing.append(path)
    assert not missing, f"{page.name} points at what is not there: {', '.join(sorted(set(missing)))}"


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}


def test_the_readme_is_short() -> None:
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the rest belongs in docs/"
