"""The README and docs/ say only what is true of the code: every command they quote parses (subcommands and options),
every SENTIMENT_* setting they name exists, every file and page they link to is there, every measured figure they
quote has the command that produces it beside it, and the README stays short."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from core.settings import Settings
from sentiment.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FIGURE_PAGES = [*PAGES, ROOT / "training" / "README.md", ROOT / "bench" / "README.md"]
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


# A measured figure: a rate, a time in ms or us, a score to 3-4 decimals (accuracy, AUC, PSI...), a percentage with
# decimals, a count of tests, a ratio ("0.90x"). Figures inside code spans are quoted output, not claims.
FIGURE = re.compile(
    r"\d(?:[\d,.]*\d)?(?:-\d(?:[\d,.]*\d)?)?\s*(?:reviews|rows|events|messages|requests)/s"
    r"|\b\d(?:[\d,.]*\d)?(?:-\d(?:[\d,.]*\d)?)?\s*(?:ms|us|µs)\b"
    r"|\b0\.\d{3,4}\b"
    r"|\b\d{1,3}\.\d{1,2}\s*%"
    r"|\b\d[\d,]* (?:passed|tests)\b"
    r"|\b\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?\s?x\b(?! ?\w)"
)
# What produces one: a command in a code span (sentiment ..., ./dev ..., python ..., pytest ..., a bench script or
# a test file) or an indented code line that runs one.
COMMAND = re.compile(
    r"`[^`\n]*(?:sentiment |\./dev|python|pytest|bench/\w+\.py|tests/test_\w+\.py)[^`\n]*`"
    r"|^    .*(?:python|sentiment |bench/\w+\.py).*$",
    flags=re.M,
)


def _blocks(text: str) -> list[tuple[int, str]]:
    """The paragraphs, tables and list blocks of a page (fenced code left out), each with its first line's number."""
    text = re.sub(r"^```.*?^```", lambda m: "\n" * m.group().count("\n"), text, flags=re.M | re.S)
    blocks: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            blocks.append((number + 1, ""))
        elif blocks and blocks[-1][1]:
            blocks[-1] = (blocks[-1][0], blocks[-1][1] + "\n" + line)
        else:
            blocks.append((number, line))
    return [b for b in blocks if b[1]]


def uncited_figures(text: str) -> list[str]:
    """Each paragraph or table quoting a measured figure with no command that produces it in itself or in the
    block just before it (a table's caption, the command block a paragraph explains), as "line N: figures"."""
    found = []
    blocks = _blocks(text)
    for i, (number, block) in enumerate(blocks):
        figures = FIGURE.findall(re.sub(r"`[^`\n]*`", "", block))
        before = blocks[i - 1][1] if i else ""
        if figures and not COMMAND.search(block) and not COMMAND.search(before):
            found.append(f"line {number}: {', '.join(figures[:3])}")
    return found


@pytest.mark.parametrize("page", FIGURE_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_figure_names_the_command_that_produces_it(page: Path) -> None:
    problems = uncited_figures(page.read_text(encoding="utf-8"))
    assert not problems, f"{page.name} quotes figures with no command beside them:\n" + "\n".join(problems)


def test_the_figure_check_can_fail() -> None:
    cited = "Scoring runs at 44,774 reviews/s on 2 threads (`bench/performance.py --only scoring`).\n"
    caption = "Measured by `.venv/bin/python bench/http_load.py`:\n\n| case | p99 |\n|---|---|\n| alone | 102 ms |\n"
    assert uncited_figures(cited) == uncited_figures(caption) == []
    assert uncited_figures("Intro.\n\nThe worker drains 5,003 reviews/s on a quiet machine.\n") == [
        "line 3: 5,003 reviews/s"
    ]
    far = "Run `sentiment evaluate`.\n\nSomething else.\n\n| model | accuracy |\n|---|---|\n| default | 0.9224 |\n"
    assert uncited_figures(far) == ["line 5: 0.9224"]  # a command two blocks away does not count
    assert uncited_figures("Canary accuracy 94.12% and 2,915 passed.\n") == ["line 1: 94.12%, 2,915 passed"]
    assert uncited_figures("It printed `accuracy 0.9412` and waits 5 s (`SENTIMENT_BATCH_WAIT`).\n") == []
    found = FIGURE.findall("at batch 256, reviews/s: 3,845-5,118 reviews/s; decoding 27-45 us")
    assert found == ["3,845-5,118 reviews/s", "27-45 us"]
