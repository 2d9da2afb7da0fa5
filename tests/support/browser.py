"""Headless Chromium for the UI tests and the screenshots: Debian's ``chromium`` driven by its ``chromedriver``."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Debian's packages (``apt-get install -y chromium chromium-driver``); nothing is downloaded.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: What headless Chromium needs on this kind of machine (airflow-notes.md), a fresh profile added.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)
#: How long a page may take to show what is waited for.
WAIT_SECONDS = 30.0


def browser_skip_reason() -> str | None:
    """Why the browser cannot start here (missing packages), or ``None``."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        return f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver"
    return None


class Browser:
    """
    One headless Chromium (a context manager), with the few steps the tests take: open a page, wait
    for text or an element, click, type, and screenshot.

    :param profile: A fresh, empty folder for the browser's profile (``--user-data-dir``).
    """

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.driver: Any = None

    def __enter__(self) -> Browser:
        import logging

        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        # Selenium's DEBUG log holds every command's body, the text typed into a password field included.
        logging.getLogger("selenium").setLevel(logging.INFO)

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        # An explicit driver: Selenium Manager (which downloads drivers) is never asked.
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(WAIT_SECONDS)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.driver is not None:
            self.driver.quit()

    # -- pages --------------------------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Load ``url``."""
        self.driver.get(url)

    def wait_for(self, what: Callable[[], Any], timeout: float = WAIT_SECONDS, describe: str = "") -> Any:
        """Call ``what`` until it returns something truthy (and return that); fail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                result = what()
            except Exception as error:  # the element is not there yet, or went stale while the page rendered
                last, result = error, None
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(
            f"Waited {timeout:.0f} s for {describe or what!r} on {self.driver.current_url} ({last!r}).\n"
            f"Page text:\n{self.text()[:3000]}"
        )

    def wait_for_text(self, text: str, timeout: float = WAIT_SECONDS) -> None:
        """Wait until ``text`` is in the page's visible text."""
        self.wait_for(lambda: text in self.text(), timeout, describe=f"text {text!r}")

    def text(self) -> str:
        """The page's visible text."""
        from selenium.webdriver.common.by import By

        try:
            return str(self.driver.find_element(By.TAG_NAME, "body").text)
        except Exception:
            return ""

    def css(self, selector: str) -> list[Any]:
        """The elements matching a CSS selector (possibly none)."""
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def xpath(self, expression: str) -> list[Any]:
        """The elements matching an XPath expression (possibly none)."""
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.XPATH, expression))

    def click_text(self, text: str, tag: str = "*", timeout: float = WAIT_SECONDS) -> None:
        """Click the first visible, enabled ``tag`` element whose own text is ``text``."""
        expression = f"//{tag}[normalize-space(.)={_xpath_literal(text)}]"

        def clickable() -> Any:
            return next((e for e in self.xpath(expression) if e.is_displayed() and e.is_enabled()), None)

        element = self.wait_for(clickable, timeout, describe=f"a clickable {tag} {text!r}")
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        element.click()

    def screenshot(self, path: Path) -> Path:
        """Save the window as a PNG."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path


def _xpath_literal(text: str) -> str:
    if "'" not in text:
        return f"'{text}'"
    return "concat('" + "', \"'\", '".join(text.split("'")) + "')"
