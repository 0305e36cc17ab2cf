"""The explorer in a real browser: Debian's headless Chromium, driven by selenium, against a live server.

The server is the real app under uvicorn on a free port of 127.0.0.1, over the
tiny lab of tests/test_explorer_api.py. The test draws on the pad with pointer
input (a stroke, then a second one), and checks that the prediction bars, every
layer's feature maps and the nearest digits appear and then change; clicks a
conv2 unit and checks its gradient map is drawn; checks an empty pad and a
stopped server are messages on the page; and checks that every URL the page
fetched is the explorer's own.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from conftest import free_port
from explorer.encoding import read_floats
from test_explorer_api import tiny_lab
from test_report_browser import CHROMEDRIVER, CHROMIUM, start_chromium

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="no /usr/bin/chromium or /usr/bin/chromedriver: apt-get install -y chromium chromium-driver")

# Maps drawn per layer of the seed CNN: conv1 9, pool1 9, conv2 16, pool2 16, logits one strip.
CANVASES_PER_LAYER = [9, 9, 16, 16, 1]


@pytest.fixture(scope="module")
def server():
    import uvicorn

    from explorer.app import create_app

    port = free_port()
    # Chromium keeps connections alive: stopping waits at most a second for them.
    config = uvicorn.Config(create_app(tiny_lab().explorer()), host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=1)
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the explorer's server did not start"
        time.sleep(0.05)
    yield running, thread, f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def page(server):
    driver = start_chromium()
    from selenium.webdriver.support.ui import WebDriverWait

    *_, url = server
    try:
        driver.get(url + "/")
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "return document.querySelectorAll('#strip .thumb').length === 20 && document.getElementById('model').value"))
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, timeout: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def draw(driver, points: list[tuple[int, int]]) -> None:
    """One stroke through `points` (offsets from the pad's centre), as mouse pointer input."""
    from selenium.webdriver.common.action_chains import ActionChains

    pad = driver.find_element("id", "pad")
    (x, y), rest = points[0], points[1:]
    actions = ActionChains(driver).move_to_element_with_offset(pad, x, y).click_and_hold()
    for next_x, next_y in rest:
        actions.move_by_offset(next_x - x, next_y - y)
        x, y = next_x, next_y
    actions.release().perform()


def draw_and_wait(driver, points: list[tuple[int, int]]) -> None:
    """Draw a stroke, then wait until the page has sent it and shown every answer."""
    seen = driver.execute_script("return window.explorer.timings.length")
    draw(driver, points)
    wait_for(driver, f"return window.explorer.timings.length > {seen} && window.explorer.settled()")


def snapshot(driver) -> dict:
    """What an update changes: bar heights, the first conv1 map's pixels, the neighbours' captions."""
    return driver.execute_script("""
        const text = (selector) => Array.from(document.querySelectorAll(selector)).map(e => e.textContent);
        return {
          bars: Array.from(document.querySelectorAll('#main-prediction .fill')).map(e => e.style.height),
          conv1: document.querySelector('#layers [data-layer=conv1] canvas').toDataURL(),
          pixels: text('#neighbours-pixels .thumb span'),
          features: text('#neighbours-features .thumb span'),
          canvases: Array.from(document.querySelectorAll('#layers .layer')).map(l => l.querySelectorAll('canvas').length),
          shapes: text('#layers .layer .shape'),
          preprocessed: document.getElementById('preprocessed').toDataURL(),
        };""")


def test_drawing_shows_the_prediction_every_layer_and_the_neighbours_and_they_follow_the_pen(page):
    draw_and_wait(page, [(-10, -80), (-5, -30), (0, 20), (5, 80)])  # a long downward stroke: a 1
    first = snapshot(page)
    assert len(first["bars"]) == 10 and any(height != "0.0px" for height in first["bars"])
    assert first["canvases"] == CANVASES_PER_LAYER
    assert first["shapes"] == ["28x28x9", "14x14x9", "14x14x16", "7x7x16", "10"]
    assert len(first["pixels"]) == 8 and len(first["features"]) == 8

    draw_and_wait(page, [(-70, -70), (0, -75), (70, -70)])  # a bar across the top: now a 7
    after = snapshot(page)
    assert after["conv1"] != first["conv1"] and after["bars"] != first["bars"]
    assert after["preprocessed"] != first["preprocessed"]
    assert after["pixels"] != first["pixels"] and after["features"] != first["features"]
    assert page.execute_script("return document.getElementById('message').hidden")  # no error, no hint


def test_clicking_a_unit_shows_its_gradient_map_and_top_digits(page):
    from selenium.webdriver.common.action_chains import ActionChains

    # The most active conv2 unit on the drawing: an active unit has a non-zero gradient.
    conv2 = next(layer for layer in page.execute_script("return window.explorer.last.think.layers")
                 if layer["name"] == "conv2")
    signal = read_floats(conv2["signal"])
    channel, y, x = (int(i) for i in np.unravel_index(signal.argmax(), signal.shape))
    canvas = page.find_elements("css selector", "#layers [data-layer=conv2] canvas")[channel]
    page.execute_script("arguments[0].scrollIntoView()", canvas)
    side = canvas.size["width"] / signal.shape[-1]  # offsets are from the canvas's centre
    ActionChains(page).move_to_element_with_offset(canvas, int((x + 0.5) * side - canvas.size["width"] / 2),
                                                   int((y + 0.5) * side - canvas.size["height"] / 2)).click().perform()
    wait_for(page, "return !document.getElementById('unit').hidden "
                   "&& document.querySelectorAll('#unit-top .thumb').length === 9")
    unit = page.execute_script("return window.explorer.last.unit")
    assert unit["layer"] == "conv2" and unit["unit"] == [channel, y, x] and unit["activation"] > 0
    gradient = read_floats(unit["maps"]["gradient"])
    row, col = np.unravel_index(np.abs(gradient).argmax(), gradient.shape)
    # Where the gradient is strongest, the map on the page is bright (red or blue), not black.
    r, g, b, _ = page.execute_script(
        "return Array.from(document.getElementById('unit-gradient').getContext('2d')"
        ".getImageData(arguments[0], arguments[1], 1, 1).data)", int(col), int(row))
    assert max(r, b) > 200, (r, g, b)
    assert page.find_element("id", "unit-name").text.startswith(f"conv2 [{channel},{y},{x}]")


def test_an_empty_pad_is_a_message_not_a_blank_page(page):
    page.find_element("id", "clear").click()
    wait_for(page, "return document.getElementById('message').textContent.includes('The pad is empty')")


def test_the_page_fetched_nothing_but_its_own_server(page, server):
    *_, url = server
    names = page.execute_script("return performance.getEntries().map(e => e.name)"
                                ".filter(n => n.includes('://'))")
    assert names and all(name.startswith(url + "/") for name in names), names
    assert any(name.endswith("/api/think") for name in names)


def test_a_stopped_server_is_a_message_on_the_page(page, server):
    running, thread, _ = server
    running.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive()
    draw(page, [(0, -60), (0, 60)])
    wait_for(page, "return document.getElementById('message').textContent.includes('is not answering')")
