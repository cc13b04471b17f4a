"""A real headless Chromium for the page tests: Debian's `chromium` driven through Debian's
`chromium-driver` by selenium. Both paths are given explicitly, so Selenium Manager never runs and
nothing is downloaded at test time (scripts/install-system-deps.sh installs the two packages).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
T = TypeVar("T")


class Browser:
    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    def open(self, url: str) -> None:
        self.driver.get(url)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_for(self, check: Callable[[], T], timeout_s: float, what: str, shot: Path | None = None) -> T:
        """The first truthy value of `check()`; fails naming `what` (and saves a screenshot) if none came."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = check()
            except AssertionError:
                if shot is not None:
                    self.screenshot(shot)
                raise
            except Exception:  # the element may not exist yet, or be re-rendered under us
                value = None  # type: ignore[assignment]
            if value:
                return value
            if time.monotonic() > deadline:
                if shot is not None:
                    self.screenshot(shot)
                raise AssertionError(f"{what}: not seen within {timeout_s:.0f} s (screenshot: {shot})")
            time.sleep(0.05)

    def screenshot(self, path: Path) -> Path:
        """The whole page, not only the window (the test artifact a person looks at)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        width, height = self.driver.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        self.driver.set_window_size(max(1280, width), min(max(900, height), 8000))
        self.driver.save_screenshot(str(path))
        return path

    def console_errors(self) -> list[dict[str, Any]]:
        """Console messages of level SEVERE since the last call (page errors, failed loads)."""
        return [entry for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]


@contextmanager
def chromium() -> Iterator[Browser]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            raise RuntimeError(f"{path} is missing: run `bash scripts/install-system-deps.sh` (as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield Browser(driver)
    finally:
        driver.quit()
