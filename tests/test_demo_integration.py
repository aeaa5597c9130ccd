"""`sentiment demo` keeps its promises: its page is up and live a minute after the start (in a real browser), it
prints no raw JSON and names what each figure measured, and `--shift` reports where the drift verdict crossed, read
every 100 shifted reviews as they arrive."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.test_web import ARTIFACTS, browser, save, text_of  # noqa: F401  (browser is a fixture)

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.integration, pytest.mark.browser]


class Demo:
    """``sentiment demo`` in a process of its own, its standard output collected line by line."""

    def __init__(self, *args: str) -> None:
        # a user's environment: no setting of ours, but where the IMDB data is when the tests were told
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_") or k == "SENTIMENT_DATA_DIR"}
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sentiment", "demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.2)
        pytest.fail(f"the demo never printed {pattern!r}:\n" + "\n".join(self.lines[-40:]))

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code


def test_the_demo_page_stays_up_and_shift_reports_its_crossing_point(browser):  # noqa: F811
    demo = Demo("--count", "600", "--shift", "--seconds", "120")
    try:
        url = demo.wait_for(r"page will be at (http://127\.0\.0\.1:\d+/)", 60).group(1)
        demo.wait_for(r"stay up for 120 s", 240)
        time.sleep(max(0.0, 60 - (time.monotonic() - demo.started)))  # a minute after the start, as a user comes back
        browser.get(url)
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 30).until(lambda d: text_of(d, "rate-note") and "model …" not in text_of(d, "model"))
        save(browser, "demo-page-after-60s.png")
        page = browser.find_element("tag name", "body").text
        assert "cannot reach the server" not in page
        assert re.search(r"[0-9a-f]{12}", text_of(browser, "model")), text_of(browser, "model")
        demo.process.send_signal(signal.SIGINT)  # Ctrl-C: the user is done
        assert demo.finish(60) == 0, "\n".join(demo.lines[-30:])
    finally:
        if demo.process.poll() is None:
            demo.process.kill()
    out = "\n".join(demo.lines)
    assert not any(line.lstrip().startswith("{") for line in demo.lines), "a raw JSON line in the demo's output"
    assert "this is the demo's pace, not the scorer's speed" in out
    crossing = re.search(r"the input drift verdict: first reading above its threshold after ([\d,]+) shifted", out)
    assert crossing, out
    at = int(crossing.group(1).replace(",", ""))
    assert at % 100 == 0 and 100 <= at <= 2000, f"crossed after {at} shifted reviews"
    print(f"\ndemo --shift: the drift verdict crossed after {at} shifted reviews (read every 100)")
    assert (ARTIFACTS / "demo-page-after-60s.png").exists()
