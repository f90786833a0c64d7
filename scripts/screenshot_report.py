"""Regenerate docs/images/executive-report.png, the README's picture of the executive
report: run the quick-start fleet (offline, simulated providers) in a temporary folder
and screenshot its ``executive_report.html`` in headless Chromium.

    python scripts/screenshot_report.py [--out PATH] [--until SECTION | --full-page]

Needs Debian's Chromium (``apt-get install chromium``) and Playwright from PyPI, which
drives it through ``executable_path``; ``playwright install`` is never run. The browser
test (tests/test_html_report.py) uses :func:`run_fleet`, :func:`run_quickstart` and
:func:`chromium` too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, ViewportSize, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEFAULT_OUT = ROOT / "docs" / "images" / "executive-report.png"
CHROMIUM = os.environ.get("FLEETBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync")
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}


def run_fleet(manifest: Path, state_dir: Path) -> Path:
    """Run ``manifest`` with ``fleetbench run`` (state and caches in ``state_dir``) and
    return the path of its executive report."""
    env = {**os.environ, "FLEETBENCH_STATE_DIR": str(state_dir / "state"),
           "FLEETBENCH_CACHE_DIR": str(state_dir / "cache")}
    done = subprocess.run([sys.executable, "-m", "fleetbench", "run", str(manifest),
                           "--quiet", "--json"],
                          env=env, check=True, capture_output=True, text=True, timeout=300)
    return Path(json.loads(done.stdout)["output_dir"]) / "executive_report.html"


def run_quickstart(workdir: Path) -> Path:
    """Copy the quick-start fleet into ``workdir``, run it there and return the path of
    its executive report."""
    shutil.copy(EXAMPLES / "quickstart.yaml", workdir / "quickstart.yaml")
    shutil.copytree(EXAMPLES / "repos", workdir / "repos")
    return run_fleet(workdir / "quickstart.yaml", workdir)


@contextmanager
def chromium(profile_dir: Path) -> Iterator[Browser]:
    """Headless Debian Chromium through Playwright. Chromium's config and cache go to
    ``profile_dir`` (it writes to ``$XDG_CONFIG_HOME`` and ``$XDG_CACHE_HOME`` even with
    a user-data folder), never to ``$HOME``."""
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} not found: apt-get install -y chromium "
                                "(or point FLEETBENCH_CHROMIUM at a Chromium binary)")
    env: dict[str, str | float | bool] = {**os.environ,
                                          "XDG_CONFIG_HOME": str(profile_dir / "config"),
                                          "XDG_CACHE_HOME": str(profile_dir / "cache")}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=list(CHROMIUM_ARGS), env=env)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(report: Path, out: Path, browser: Browser, *, until: str | None) -> None:
    """Save a PNG of ``report``: from its top to the end of section ``until`` (an id,
    e.g. ``providers``), or the whole page."""
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(report.as_uri())
        out.parent.mkdir(parents=True, exist_ok=True)
        if until is None:
            page.screenshot(path=str(out), full_page=True)
            return
        box = page.locator(f"section#{until}").bounding_box()
        if box is None:
            raise ValueError(f"the report has no visible section {until!r}")
        page.screenshot(path=str(out), full_page=True,
                        clip={"x": 0, "y": 0, "width": VIEWPORT["width"],
                              "height": box["y"] + box["height"] + 20})
    finally:
        page.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--until", default="providers",
                      help="section id the picture ends with (default: providers)")
    size.add_argument("--full-page", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetbench-screenshot-") as tmp:
        work = Path(tmp)
        report = run_quickstart(work)
        with chromium(work / "browser") as browser:
            screenshot(report, args.out, browser,
                       until=None if args.full_page else args.until)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
