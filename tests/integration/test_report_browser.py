"""The HTML report in a real browser: headless Chromium (Debian's `chromium`, installed by .ci/run) loads the
page from disk, with no console error and every image decoded; a screenshot is taken and checked for content.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: NUL-terminated JSON on
file descriptors 3 and 4), so no port, no websocket client and no network is involved.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

from ernie.report import report_runs
from tests.integration.test_report import LOCAL_RUNS
from tests.unit.test_results import RUNS

CHROMIUM = "/usr/bin/chromium"
PAGE_TIMEOUT_S = 60.0
IMAGES_JS = """
(async () => {
  const imgs = [...document.images];
  const decoded = await Promise.all(imgs.map(i => i.decode().then(() => true, () => false)));
  return JSON.stringify(imgs.map((i, n) => ({alt: i.alt, decoded: decoded[n], width: i.naturalWidth})));
})()
"""


class Chromium:
    """A headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path) -> None:
        if not os.access(CHROMIUM, os.X_OK):
            raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        keep = (to_browser_r, from_browser_w)

        def wire_fds() -> None:  # in the child: its fd 3 reads our commands, fd 4 carries its answers
            hi = [os.dup(fd) for fd in keep]
            os.dup2(hi[0], 3)
            os.dup2(hi[1], 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--remote-debugging-pipe", f"--user-data-dir={profile}",
             "--window-size=1280,900", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=wire_fds, close_fds=False,
        )
        for fd in keep:
            os.close(fd)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = PAGE_TIMEOUT_S) -> dict:
        """Send one command (to the attached page once there is one) and wait for its answer."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = PAGE_TIMEOUT_S) -> dict:
        """Wait for the event `method`, keeping every other event."""
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            e = self._read(timeout)
            if e.get("method") == method:
                return e
            self.events.append(e)

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError(f"chromium said nothing for {timeout:.0f}s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def open(self, url: str) -> None:
        """Open `url` in a new page, attached, with console and log events on, and wait for its load."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(json.dumps(p["exceptionDetails"])[:500])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"{p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def images(self) -> list[dict[str, Any]]:
        res = self.send("Runtime.evaluate", {"expression": IMAGES_JS, "awaitPromise": True, "returnByValue": True})
        return json.loads(res["result"]["value"])

    def text(self) -> str:
        """The page as a reader sees it (its rendered text)."""
        res = self.send("Runtime.evaluate", {"expression": "document.body.innerText", "returnByValue": True})
        return res["result"]["value"]

    def screenshot(self, path: Path) -> None:
        res = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(res["data"]))

    def close(self) -> None:
        try:
            self.session = None
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture
def chromium(tmp_path: Path):
    browser = Chromium(tmp_path / "profile")
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("browser") / "results"
    shutil.copytree(RUNS, results, ignore=shutil.ignore_patterns("README.md"))
    files, _ = report_runs(results, [], True, None)
    return files.html


def test_report_opens_in_chromium_without_errors_and_with_every_image(
    chromium: Chromium, report_html: Path, tmp_path: Path
) -> None:
    chromium.open(report_html.as_uri())
    images = chromium.images()
    assert len(images) == 4
    assert all(i["decoded"] and i["width"] > 0 for i in images), images
    assert chromium.errors() == []

    shot = tmp_path / "report.png"
    chromium.screenshot(shot)
    pixels = matplotlib.image.imread(shot)
    height, width = pixels.shape[:2]
    assert width >= 1000 and height > 2000  # the whole page: plots and tables, not just the viewport
    assert pixels.std() > 0.05  # not a blank page
    keep = os.environ.get("ERNIE_SCREENSHOT_DIR")  # where a developer wants to look at it
    if keep:
        shutil.copy(shot, Path(keep) / "report.png")


def test_a_report_of_local_runs_draws_no_empty_plot_and_says_why(chromium: Chromium, tmp_path: Path) -> None:
    """`ernie demo`'s own runs (issue 22): not billed and, recorded before result.json named their host's CPUs,
    not priced; none reached its target. The page shows the two plots that have values, each image whole, says
    why the cost and target plots are not drawn, and nowhere shows a $0 figure."""
    results = tmp_path / "results"
    shutil.copytree(LOCAL_RUNS, results)
    files, _ = report_runs(results, [], True, None)
    chromium.open(files.html.as_uri())
    images = chromium.images()
    assert [i["alt"] for i in images] == ["Throughput per accelerator and framework", "Where the wall time went"]
    assert all(i["decoded"] and i["width"] > 0 for i in images), images
    assert chromium.errors() == []
    text = chromium.text()
    assert "Cost per million samples (or words): not drawn, no complete run is priced" in text
    assert "Time and cost to the quality target: not drawn, no complete run reached its quality target." in text
    assert "Frameworks compared" in text and "Settings" in text
    assert "$0" not in text


def test_the_browser_check_catches_a_broken_image_and_a_console_error(
    chromium: Chromium, report_html: Path, tmp_path: Path
) -> None:
    """The harness itself: a page with a corrupt image and a script error must fail both checks."""
    page = report_html.read_text()
    broken = page.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1)
    broken = broken.replace("</body>", "<script>console.error('boom')</script></body>")
    bad = tmp_path / "broken.html"
    bad.write_text(broken)
    chromium.open(bad.as_uri())
    images = chromium.images()
    assert sum(not i["decoded"] for i in images) == 1
    assert any("boom" in e for e in chromium.errors())
