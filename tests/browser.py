"""A real browser for tests: headless Chromium driven by selenium, bounded waits, screenshots.

Chromium, chromedriver (Debian `chromium`, `chromium-driver`, installed by `make setup`) and selenium are required:
a test that needs them and cannot find them fails and says what to install; it never passes or skips silently.
The driver is started with explicit paths to both binaries, so that Selenium Manager never looks for (or tries to
download) a browser on the network.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")  # Debian's name first
DRIVER = "chromedriver"
WINDOW = (1600, 1000)
PAGE_LOAD_TIMEOUT_S = 60
WAIT_TIMEOUT_S = float(
    os.environ.get("AVASR_BROWSER_WAIT_S", 90)
)  # the MLflow UI renders in 5-15 s on a loaded 2-core machine
POLL_S = 0.5
INSTALL_HINT = (
    "run `make setup` (scripts/install_system_deps.sh installs them), or as root: "
    "apt-get install -y chromium chromium-driver && .venv/bin/pip install selenium"
)


def find_binaries() -> tuple[str, str]:
    """Paths of the browser and of chromedriver; pytest.fail naming what is missing."""
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver = shutil.which(DRIVER)
    missing = [what for what, path in (("chromium", browser), ("chromedriver", driver)) if path is None]
    if missing:
        pytest.fail(
            f"this test drives a real browser and could not run: {' and '.join(missing)} not found on "
            f"PATH; {INSTALL_HINT}",
            pytrace=False,
        )
    return browser, driver


def start_chromium(screenshots: Path, window: tuple[int, int] = WINDOW):
    """A headless Chromium WebDriver; failed waits save their screenshot into `screenshots`. Quit it when done
    (or use `chromium()`)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(
            f"this test drives a real browser and could not run: selenium is not installed; {INSTALL_HINT}",
            pytrace=False,
        )
    browser, driver_path = find_binaries()
    screenshots.mkdir(parents=True, exist_ok=True)
    options = Options()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--window-size={window[0]},{window[1]}",
    ):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to start as root with its sandbox
    log = screenshots / "chromedriver.log"
    try:
        driver = webdriver.Chrome(options=options, service=Service(driver_path, log_output=str(log)))
    except Exception as e:  # selenium's SessionNotCreatedException, WebDriverException...
        pytest.fail(
            f"headless Chromium ({browser}, driver {driver_path}) did not start: {e}\nchromedriver log: {log}",
            pytrace=False,
        )
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    driver.avasr_screenshots = screenshots  # where wait_for saves a failed wait's screenshot
    return driver


@contextmanager
def chromium(screenshots: Path, window: tuple[int, int] = WINDOW) -> Iterator[Any]:
    driver = start_chromium(screenshots, window)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, name: str) -> Path:
    """Save the window as <screenshots>/<name>.png and return its path."""
    folder = getattr(driver, "avasr_screenshots", None) or Path.cwd()
    path = Path(folder) / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def page_text(driver, chars: int = 1500) -> str:
    try:
        return driver.find_element("tag name", "body").text[:chars]
    except Exception as e:  # the page is gone or not loaded: say so instead of hiding the wait's own failure
        return f"(page text unavailable: {e})"


def wait_for(
    driver, check: Callable[[Any], Any], what: str, timeout_s: float = WAIT_TIMEOUT_S, shot: str = "failed-wait"
) -> Any:
    """Poll `check(driver)` until it returns a truthy value (returned) or `timeout_s` passes.

    `check` may also return a falsy value and set nothing, or raise; exceptions raised while the page is
    re-rendering (stale elements...) count as "not yet". On timeout: a screenshot, then pytest.fail naming `what`,
    the URL, the last exception and the start of the page's text.
    """
    deadline = time.monotonic() + timeout_s
    last_error = None
    while True:
        try:
            result = check(driver)
            if result:
                return result
            last_error = None
        except Exception as e:  # noqa: BLE001 - re-rendering pages raise many selenium errors; reported below
            last_error = e
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    path = screenshot(driver, shot)
    because = f"; last error: {type(last_error).__name__}: {last_error}" if last_error else ""
    pytest.fail(
        f"waited {timeout_s:g} s for {what} on {driver.current_url}{because}\nscreenshot: {path}\n"
        f"page text:\n{page_text(driver)}",
        pytrace=False,
    )
