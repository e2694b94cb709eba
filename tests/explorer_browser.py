"""Driving `gankit serve`'s page in a real headless Chromium: helpers for tests/test_browser.py,
and the script that makes the README's screenshots of it.

    .venv/bin/python tests/explorer_browser.py RUN OUT.png [RUN OUT.png ...]

starts `gankit serve RUN --port 0` for each run, loads the page, waits for every picture
and writes a screenshot of the whole page to OUT.png.

The browser is the system's Chromium (Debian: `apt-get install chromium`; elsewhere set
GANKIT_CHROMIUM to its path) driven by Playwright: Playwright never downloads a browser
here (no `playwright install`).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
CHROMIUM = os.environ.get("GANKIT_CHROMIUM", "/usr/bin/chromium")
# Headless, and nothing that reaches for the network or a GPU: CI machines have neither.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PICTURES = ("#grid", "#end-a", "#interp", "#end-b")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set GANKIT_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    return None


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    returncode: int | None = None
    stderr: str = ""


@contextmanager
def serving(run, *extra: str, timeout: float = 60):
    """`gankit serve RUN --port 0` in a subprocess; yields a Server with its URL. On leaving,
    Ctrl+C (SIGINT) stops it, and the Server holds its exit code and stderr."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gankit", "serve", str(run), "--port", "0", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell's background job ignores SIGINT and passes that on; Ctrl+C must reach the server.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    server = Server("", process)
    line = ""
    try:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            pass
        found = re.search(r"at (http://\S+) ", line)
        if found:
            server.url = found[1]
            yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            _, server.stderr = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            _, server.stderr = process.communicate()
        server.returncode = process.returncode
    if not server.url:
        raise AssertionError(f"`gankit serve {run}` did not start within {timeout} s: {line!r} {server.stderr}")


@contextmanager
def chromium():
    """A headless Chromium browser (Playwright's Browser) from the system's binary."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def loaded(page, selector: str, old_src: str | None = None, timeout_ms: int = 30_000) -> str:
    """Wait until the <img> at selector has finished loading a src other than old_src
    (while a new src loads, `complete` is false); its src."""
    from playwright.sync_api import TimeoutError

    try:
        page.wait_for_function(
            """([selector, old]) => {
                 const img = document.querySelector(selector);
                 return img.src !== "" && img.src !== old && img.complete && img.naturalWidth > 0;
               }""", arg=[selector, old_src], timeout=timeout_ms)
    except TimeoutError:
        now = page.eval_on_selector(selector, "img => img.src")
        raise AssertionError(f"{selector} loaded no new picture in {timeout_ms / 1000:.0f} s (src: {now})") from None
    return page.eval_on_selector(selector, "img => img.src")


def pixels(page, selector: str) -> str:
    """The pixels the browser decoded for the <img> at selector, as a PNG data URL (drawn on
    a canvas at the image's own size: the same pixels give the same string)."""
    return page.eval_on_selector(selector, """img => {
        const canvas = document.createElement("canvas");
        canvas.width = img.naturalWidth;
        canvas.height = img.naturalHeight;
        canvas.getContext("2d").drawImage(img, 0, 0);
        return canvas.toDataURL("image/png");
    }""")


def settled(page, timeout_ms: int = 30_000) -> None:
    """Wait until every picture of the page has loaded its latest src."""
    page.wait_for_function(
        """(selectors) => selectors.every((selector) => {
             const img = document.querySelector(selector);
             return img.src !== "" && img.complete && img.naturalWidth > 0;
           })""", arg=list(PICTURES), timeout=timeout_ms)


def open_explorer(browser, url: str):
    """A page with the explorer loaded and every picture drawn."""
    page = browser.new_page(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
    page.goto(url)
    settled(page)
    return page


def screenshot(run, out: Path) -> None:
    """The explorer of a run, whole page, as it first opens."""
    with serving(run) as server, chromium() as browser:
        page = open_explorer(browser, server.url)
        page.screenshot(path=str(out), full_page=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or len(args) % 2:
        sys.exit(f"usage: {sys.argv[0]} RUN OUT.png [RUN OUT.png ...]")
    if browser_missing():
        sys.exit(f"error: {browser_missing()}")
    for run, out in zip(args[::2], args[1::2]):
        screenshot(run, Path(out))
        print(f"wrote {out}")
