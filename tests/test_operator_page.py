"""The operator's page in a real headless browser (Debian's Chromium, driven by Selenium) while a station flashes.

Two ports: one a mock ESP32 ROM bootloader behind a slow link (so a flash lasts long enough to be seen
moving), one whose board does not answer. At 1280x800, the page must name the command to run before the
first flash, show the first board's progress live, then PASS in green, the second FAIL in red with its
one-line reason in large type, the counts a supervisor reads, and its Retry button must clear the device's
error. The screenshots are left in the test's temporary directory to look at.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from device_provisioning.cli import main
from device_provisioning.factory import operator_page, station
from device_provisioning.factory.opening import open_batch_journal
from device_provisioning.identity import codesign
from devtools.uart_link import uart_links
from tests.helpers import BETA_TABLE

pytestmark = pytest.mark.integration  # a station, a loopback server and Chromium

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Slow enough that a 16 KiB credentials flash takes about two seconds: the page must show it moving.
SLOW_LINK = 9_000
DEAD_PORT = "socket://127.0.0.1:9"  # the discard port: nothing listens on loopback


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    codesign.create_identity(tmp_path / "signer")
    (tmp_path / "devices.csv").write_text("serial,thing_name\nSN-A,board-a\nSN-B,board-b\n")
    (tmp_path / "batch.toml").write_text(
        f'[batch]\npartition_table = "{BETA_TABLE}"\ncode_verify_cert = "{tmp_path / "signer" / codesign.CERT_FILE}"\n'
    )
    argv = ["batch", "prepare", "--devices", tmp_path / "devices.csv", "--config", tmp_path / "batch.toml",
            "--out", tmp_path / "batch", "--workers", "1"]  # fmt: skip
    assert main([str(a) for a in argv], out=io.StringIO(), err=io.StringIO()) == 0
    return tmp_path / "batch"


# Read every card in one script: the page redraws twice a second, so element handles go stale.
CARDS = """
return Object.fromEntries([...document.querySelectorAll('.port')].map(e => [e.dataset.port, {
    cls: e.className, serial: e.dataset.serial, progress: String(e.querySelector('progress').value),
    outcome: e.querySelector('.outcome').textContent, reason: e.querySelector('.reason').textContent}]));
"""


def cards(driver: webdriver.Chrome) -> dict[str, dict[str, str]]:
    return dict(driver.execute_script(CARDS))


def counts(driver: webdriver.Chrome) -> dict[str, str]:
    return dict(driver.execute_script(COUNTS))


COUNTS = """
return Object.fromEntries([...document.querySelectorAll('.count')].map(
    e => [e.id.replace('count-', ''), e.querySelector('.n').textContent]));
"""
# What a supervisor sees from two metres: colours and sizes as the browser computed them.
LOOK = """
const card = p => document.querySelector(`.port[data-port="${p}"]`);
const style = (e, name) => getComputedStyle(e)[name];
const failed = card(arguments[0]), passed = card(arguments[1]);
return {failed_background: style(failed, 'backgroundColor'), passed_background: style(passed, 'backgroundColor'),
        reason_px: parseFloat(style(failed.querySelector('.reason'), 'fontSize')),
        outcome_px: parseFloat(style(failed.querySelector('.outcome'), 'fontSize')),
        count_px: parseFloat(style(document.querySelector('.count .n'), 'fontSize')),
        failed_bar: style(failed.querySelector('progress'), 'display'),
        passed_bar: style(passed.querySelector('progress'), 'display'),
        station: failed.querySelector('.station').textContent};
"""


def test_the_page_follows_a_station_live_and_retries_a_failed_board(
    browser: webdriver.Chrome, prepared: Path, tmp_path: Path
) -> None:
    # The station's name comes from the batch config's [stations] table (host name -> a name people use).
    page = operator_page.serve(prepared, station_names={socket.gethostname(): "Line 3, bench 2"})
    try:
        browser.get(page.url)
        WebDriverWait(browser, 10).until(lambda d: "2 devices" in d.find_element(By.ID, "summary").text)
        # Empty state: the page names the command that starts the station, and the counts read 2 to flash.
        assert f"device-provisioning batch flash {prepared} --ports" in browser.find_element(By.ID, "next").text
        assert counts(browser) == {"to_flash": "2", "flashing": "0", "passed": "0", "failed": "0"}
        browser.save_screenshot(str(tmp_path / "operator-page-empty.png"))
        with uart_links(1, rate=SLOW_LINK) as (slow,):
            results: list[station.StationResult] = []
            flashing = threading.Thread(
                target=lambda: results.extend(station.flash_station(prepared, [slow, DEAD_PORT], stub=False))
            )
            flashing.start()
            # Live: the slow board is seen part way (a progress bar neither empty nor full) while it flashes.
            WebDriverWait(browser, 20, poll_frequency=0.1).until(
                lambda d: (
                    0 < int(cards(d).get(slow, {}).get("progress", "0")) < 100
                    and cards(d)[slow]["outcome"] == "flashing"
                )
            )
            flashing.join(timeout=60)
        assert [r.ok for r in results] == [True, False]
        WebDriverWait(browser, 10).until(lambda d: cards(d).get(slow, {}).get("outcome") == "PASS")
        shown = cards(browser)
        assert (
            shown[slow]["serial"] == "SN-A" and shown[slow]["progress"] == "100" and "verified" in shown[slow]["reason"]
        )
        assert shown[DEAD_PORT]["serial"] == "SN-B" and shown[DEAD_PORT]["outcome"] == "FAIL"
        assert shown[DEAD_PORT]["reason"] and "\n" not in shown[DEAD_PORT]["reason"]
        WebDriverWait(browser, 10).until(lambda d: counts(d)["failed"] == "1")
        assert counts(browser) == {"to_flash": "0", "flashing": "0", "passed": "1", "failed": "1"}
        # PASS green, FAIL red with its reason in large type, the progress bar only while flashing.
        look = browser.execute_script(LOOK, DEAD_PORT, slow)
        assert look["failed_background"] == "rgb(179, 38, 30)" and look["passed_background"] == "rgb(23, 112, 47)"
        assert float(look["reason_px"]) >= 28 and float(look["outcome_px"]) >= 48 and float(look["count_px"]) >= 60
        assert look["failed_bar"] == "none" and look["passed_bar"] == "none"
        assert look["station"] == "station Line 3, bench 2"
        browser.save_screenshot(str(tmp_path / "operator-page.png"))

        # The operator presses Retry on the failed board (one script: the card is redrawn under a handle).
        browser.execute_script(f"document.querySelector('.port[data-port=\"{DEAD_PORT}\"] button.retry').click()")
        WebDriverWait(browser, 10).until(lambda d: cards(d)[DEAD_PORT]["outcome"] == "RETRY QUEUED")
        journal = open_batch_journal(prepared, as_station=False).journal
        try:
            assert journal.get("SN-B").error is None and journal.get("SN-B").state == "image_built"
            assert journal.get("SN-A").state == "verified"
        finally:
            journal.close()
    finally:
        page.stop()


def test_retry_is_refused_from_another_origin_and_for_a_board_that_did_not_fail(prepared: Path) -> None:
    import json
    import urllib.error
    import urllib.request

    page = operator_page.serve(prepared)
    try:
        body = json.dumps({"serial": "SN-A", "port": "p", "station": "s"}).encode()
        for headers, status in (
            ({"Origin": "http://evil.example"}, 403),
            ({}, 415),
            ({"Content-Type": "application/json"}, 409),
        ):
            request = urllib.request.Request(page.url + "api/retry", data=body, headers=headers, method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)  # noqa: S310 - loopback test server
            assert refused.value.code == status
    finally:
        page.stop()
