"""``sentiment worker --processes``: what it accepts, and how many cores ``auto`` counts (no service)."""

from __future__ import annotations

import os

import pytest

from core.errors import UserError
from sentiment.cli import main
from stream.supervisor import cpu_quota, parse_processes, usable_cores


def test_a_count_or_auto():
    assert parse_processes("3") == 3
    assert parse_processes("auto") == usable_cores() >= 1
    assert usable_cores() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value", ["0", "-2", "two", "", "1.5"])
def test_anything_else_is_a_usage_error(value):
    with pytest.raises(UserError) as caught:
        parse_processes(value)
    assert caught.value.exit_code == 2


def test_the_command_line_says_what_is_wrong_in_one_line(capsys):
    assert main(["worker", "--processes", "none"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "sentiment worker: --processes 'none': not a number", err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "files,expected",
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "200000 100000\n"}, 2.0),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
        ({}, None),
    ],
)
def test_the_cpu_limit_of_a_container_is_read_from_its_cgroup(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == expected
