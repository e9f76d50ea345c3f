"""The console page in headless Chromium: the graph live, a node's chart, a replay of dead
letters that then succeed. The screenshot lands in artifacts/console.png; with
``HAIVE_UPDATE_SCREENSHOTS=1`` also in docs/images/console.png (the README shows it).

Needs the Debian packages ``chromium`` and ``chromium-driver`` (the ``browser`` marker skips
the test on a machine without them and fails it in CI).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[3]
SCREENSHOTS = [ROOT / "artifacts" / "console.png"]
if os.environ.get("HAIVE_UPDATE_SCREENSHOTS") == "1":
    SCREENSHOTS.append(ROOT / "docs" / "images" / "console.png")

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the marker's check reports it before the test would run
    pass


def waiting(driver: Any) -> Any:
    """A wait that reads again when the page redrew what it was reading (every second)."""
    return WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,))


def retrying(driver: Any, action: Any) -> Any:
    """Run ``action(driver)`` again when the page redrew the element under it (it redraws
    every second)."""
    return WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: action(d) or True
    )


def make_driver(profile: str) -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1400,1100",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


async def test_graph_chart_and_replay_in_chromium(serve: Any, until: Any) -> None:
    profile = tempfile.mkdtemp(prefix="haive-chromium-")
    driver = await trio.to_thread.run_sync(make_driver, profile)
    try:
        async with serve(token="browser-token", interval=0.2) as (
            address,
            _pipeline,
            flaky,
            sink,
        ):

            def open_and_click_a_node() -> tuple[str, str]:
                driver.get(address.page_url)
                wait = waiting(driver)
                wait.until(
                    lambda d: d.find_elements(By.CSS_SELECTOR, "#nodes g[data-node='enrich']")
                )
                # Items fail in 'enrich': its node turns red.
                wait.until(
                    lambda d: (
                        d.find_element(
                            By.CSS_SELECTOR, "#nodes g[data-node='enrich']"
                        ).get_attribute("data-state")
                        == "errors"
                    )
                )
                retrying(
                    driver,
                    lambda d: d.find_element(
                        By.CSS_SELECTOR, "#nodes g[data-node='parse'] rect"
                    ).click(),
                )
                wait.until(
                    lambda d: (
                        int(d.find_element(By.ID, "chart").get_attribute("data-points") or 0) >= 3
                    )
                )
                chart = driver.find_element(By.ID, "chart")
                return str(chart.get_attribute("data-node")), str(
                    driver.find_element(By.ID, "chart-title").text
                )

            node, title = await trio.to_thread.run_sync(open_and_click_a_node)
            assert node == "parse" and title.startswith("parse")

            def pick_dead_letters() -> list[tuple[int, int]]:
                wait = waiting(driver)
                wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#dead-letters tr")) >= 3)
                picked: list[tuple[int, int]] = []
                for index in range(3):

                    def pick(d: Any, index: int = index) -> None:
                        row = d.find_elements(By.CSS_SELECTOR, "#dead-letters tr")[index]
                        cells = row.find_elements(By.TAG_NAME, "td")
                        letter = (int(cells[1].text), int(cells[5].text))
                        row.find_element(By.CSS_SELECTOR, "input.pick").click()
                        picked.append(letter)

                    retrying(driver, pick)
                return picked

            picked = await trio.to_thread.run_sync(pick_dead_letters)
            flaky.failing = False  # the cause is fixed: the replayed items now succeed

            def replay_and_shoot() -> str:
                retrying(driver, lambda d: d.find_element(By.ID, "replay").click())
                waiting(driver).until(
                    lambda d: d.find_element(By.ID, "replay-result").text.startswith("replayed")
                )
                return str(driver.find_element(By.ID, "replay-result").text)

            result = await trio.to_thread.run_sync(replay_and_shoot)
            assert result == "replayed 3"
            await until(lambda: all(payload * 10 in sink.items for _, payload in picked))

            def replayed_rows_gone_and_screenshot() -> set[str]:
                ids = {str(i) for i, _ in picked}
                waiting(driver).until(
                    lambda d: (
                        not ids
                        & {
                            r.get_attribute("data-id")
                            for r in d.find_elements(By.CSS_SELECTOR, "#dead-letters tr")
                        }
                    )
                )
                waiting(driver).until(
                    lambda d: (
                        d.find_element(
                            By.CSS_SELECTOR, "#nodes g[data-node='enrich']"
                        ).get_attribute("data-state")
                        != "errors"
                    )
                )
                flaky.failing = True  # errors again, so the screenshot shows them
                waiting(driver).until(
                    lambda d: (
                        d.find_elements(By.CSS_SELECTOR, "#alerts li")
                        and d.find_element(
                            By.CSS_SELECTOR, "#nodes g[data-node='enrich']"
                        ).get_attribute("data-state")
                        == "errors"
                    )
                )
                for path in SCREENSHOTS:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    driver.save_screenshot(str(path))
                return ids

            await trio.to_thread.run_sync(replayed_rows_gone_and_screenshot)
    finally:
        await trio.to_thread.run_sync(driver.quit)
        shutil.rmtree(profile, ignore_errors=True)
