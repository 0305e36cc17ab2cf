"""The lecture report seen in a real browser: Debian's headless Chromium, driven by selenium.

Built from small synthetic values (tests/test_report.py), so no pipeline run is needed. Checks
that every <img> decoded (naturalWidth > 0), that the claims table has one row per claim with
pass and fail rows coloured differently, and that every in-page link lands on an element.
Uses /usr/bin/chromium and /usr/bin/chromedriver only (`apt-get install chromium
chromium-driver`); never a downloaded browser. Skips when they are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_report import synthetic_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Flags that work as root in a container with no display, no GPU and no network.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1200,900")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="no /usr/bin/chromium or /usr/bin/chromedriver: apt-get install -y chromium chromium-driver")


def start_chromium(profile: Path | None = None, page_load_timeout: float = 60):
    """Debian's headless Chromium under selenium (skips when selenium is missing), with a fresh profile if given."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    # Selenium Manager would look for (and download) drivers: both paths are given, and it is told it is offline.
    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    if profile is not None:
        options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(page_load_timeout)
    return driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def opened(browser, tmp_path_factory):
    html, claims, figures = synthetic_report()
    path = tmp_path_factory.mktemp("report") / "lecture_report.html"
    path.write_text(html, encoding="utf-8")
    browser.get(path.as_uri())
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const pending = Array.from(document.images).filter(i => !i.complete)
            .map(i => new Promise(r => { i.onload = r; i.onerror = r; }));
        Promise.all(pending).then(() => done(true));
    """)
    return browser, claims, figures


def test_every_image_loads(opened):
    browser, _, figures = opened
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);")
    assert len(images) == len(figures) + 1  # every figure, and the claims overview
    broken = [alt for alt, complete, width, height in images if not (complete and width > 0 and height > 0)]
    assert not broken, f"images that did not load: {broken}"


def test_claims_table_has_one_row_per_claim(opened):
    browser, claims, _ = opened
    rows = browser.execute_script("""
        return Array.from(document.querySelectorAll('#claims-table tbody tr')).map(r => [
            r.id, r.className, r.cells[r.cells.length - 1].innerText.trim(),
            getComputedStyle(r).backgroundColor, r.getBoundingClientRect().height]);""")
    assert [row[0] for row in rows] == [f"claim-{c.key}" for c in claims]
    assert [row[2] for row in rows] == ["pass" if c.passed else "FAIL" for c in claims]
    assert all(height > 0 for *_, height in rows)
    colours = {cls: colour for _, cls, _, colour, _ in rows}
    assert set(colours) == {"pass", "fail"} and colours["pass"] != colours["fail"]


def test_title_and_contents_links_land(opened):
    browser, _, _ = opened
    assert "Convolutional Networks" in browser.title
    missing = browser.execute_script("""
        return Array.from(document.querySelectorAll('a[href^="#"]'))
            .map(a => a.getAttribute('href').slice(1))
            .filter(id => !document.getElementById(id));""")
    assert not missing
    sections = browser.execute_script("return document.querySelectorAll('nav.toc a').length;")
    assert sections >= 14  # the lecture's sections, the claims, provenance and the runs
