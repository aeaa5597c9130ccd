"""Quiet by default, loud on request: a worker says what it does in a few lines of its own (the first one at once),
an idle worker does not repeat itself, --verbose brings the libraries' lines back, and no command that loads
TensorFlow prints TensorFlow's start-up lines."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration

TENSORFLOW_NOISE = ("oneDNN", "absl", "cuda", "TF_ENABLE", "tensorflow/core", "Ran out of data", "input ran out")


def lines_of(worker) -> list[str]:
    return (
        [line.rstrip() for line in worker.log.read_text(errors="replace").splitlines()] if worker.log.exists() else []
    )


def test_a_worker_starts_in_a_few_lines_of_its_own_and_is_quiet_while_idle(stream_settings, start_worker):
    started = time.monotonic()
    worker = start_worker(stream_settings, extra_env={"SENTIMENT_PROGRESS_INTERVAL": "1"})
    assert wait_until(lambda: lines_of(worker), 30), "the worker printed nothing"
    first_line_after = time.monotonic() - started
    assert wait_until(lambda: any(line.endswith(" ready") for line in lines_of(worker)), 90), worker.tail()
    time.sleep(4)  # four progress intervals while idle
    lines = lines_of(worker)
    start = lines[: next(i for i, line in enumerate(lines) if line.endswith(" ready")) + 1]
    print(f"\nfirst line after {first_line_after:.1f} s; start in {len(start)} lines:\n" + "\n".join(start))
    # "loading the model" once the broker and the database answer, or first "checking ..." when they take over 3 s
    # (a loaded machine), then that line
    announced = lines[1] if lines[0].startswith("sentiment worker: checking ") else lines[0]
    assert announced.startswith("sentiment worker: ") and "loading the model" in announced, lines[:2]
    # printed before the checks' imports: 0.5-1 s on a loaded 2-core machine (2.5 s when it came after them)
    assert first_line_after < 3, f"the first line came {first_line_after:.1f} s after the start"
    assert len(start) <= 6, "\n".join(start)
    assert not [line for line in lines if "[^" in line], "Faust's service lines at the info level"
    idle = [line for line in lines if "progress:" in line]
    assert len(idle) == 1, idle  # said once, not every second
    worker.assert_alive()


def test_verbose_brings_the_libraries_lines_back(stream_settings, start_worker):
    worker = start_worker(stream_settings, args=("--verbose",))
    assert wait_until(lambda: any(line.endswith(" ready") for line in lines_of(worker)), 90), worker.tail()
    assert any("[^" in line for line in lines_of(worker)), worker.tail()


def test_commands_that_load_tensorflow_print_none_of_its_start_up_lines():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTIMENT_", "TF_"))}
    done = subprocess.run(
        [sys.executable, "-m", "sentiment", "evaluate", "--data", "model/sample_reviews.jsonl"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert done.stdout.count("model ") == 1 and "accuracy" in done.stdout
