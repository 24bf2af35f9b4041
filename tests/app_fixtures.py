"""Helpers of the web-app tests: a server on a free localhost port (in this process, non-blocking), a headless
Chromium driven by Selenium, and waits on what the page shows."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Seconds a page wait may take on the busy test machine (a run of the tiny model included).
PAGE_TIMEOUT_S = 120


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def app_server(
    checkpoint: Path, root: Path, temp_root: Path, auth: list[tuple[str, str]] | None = None, **settings: Any
) -> Iterator[tuple[str, Any]]:
    """The app on a free port of 127.0.0.1 (``ui.launch(block=False)``, with Gradio's login when ``auth`` is given);
    yields (url, context), then stops the server and removes its temporary root."""
    from arn_lightning.app.ui import AppSettings, build_app, launch

    demo, context = build_app(AppSettings(checkpoint=checkpoint, root=root, temp_root=temp_root, **settings))
    port = free_port()
    launch(demo, context, "127.0.0.1", port, block=False, auth=auth)
    try:
        yield f"http://127.0.0.1:{port}/", context
    finally:
        demo.close()
        context.close()


def chrome(download_dir: Path) -> Any:
    """A headless Chromium (Debian's ``chromium`` and ``chromedriver``; the test is skipped without them)."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()) and not shutil.which("chromedriver"):
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (`make browser` installs them); none is downloaded")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(download_dir)})
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def wait_until(condition: Callable[[], Any], timeout: float = PAGE_TIMEOUT_S, what: str = "a condition") -> Any:
    """Poll ``condition`` until it returns a true value (returned); fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # an element not there yet, or replaced while read
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"Expected {what} within {timeout:.0f} s but it did not happen")
        time.sleep(0.5)


def text_of(driver: Any, css: str) -> str:
    """The visible text of the first element matching ``css`` ("" if none)."""
    from selenium.webdriver.common.by import By

    elements = driver.find_elements(By.CSS_SELECTOR, css)
    return elements[0].text if elements else ""


def open_tab(driver: Any, label: str) -> None:
    """Click the tab button whose text starts with ``label``."""
    from selenium.webdriver.common.by import By

    wait_until(
        lambda: driver.find_element(By.XPATH, f"//button[@role='tab' and starts-with(normalize-space(.), '{label}')]"),
        what=f"the tab {label!r}",
    ).click()


def type_into(driver: Any, elem_id: str, text: str) -> None:
    """Replace the text of the Gradio textbox ``elem_id``."""
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
    box.clear()
    box.send_keys(text)


def upload(driver: Any, elem_id: str, path: Path) -> None:
    """Give ``path`` to the file input of the Gradio file component ``elem_id`` and wait until it is uploaded."""
    from selenium.webdriver.common.by import By

    field = wait_until(
        lambda: driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]"), what=f"the file input {elem_id}"
    )
    field.send_keys(str(path))
    # the name shows split in two elements: "synthetic" and ".mp4"
    wait_until(lambda: path.stem in text_of(driver, f"#{elem_id}"), what=f"{path.name} uploaded")


def screenshot(driver: Any, folder: Path, name: str, also: Path | None = None) -> Path:
    """Save a full-window screenshot ``folder/name.png`` (and a copy in ``also``), printing where."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    if also is not None:
        also.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, also / f"{name}.png")
    return path
