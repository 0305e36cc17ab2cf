"""Round trip of one explorer update: a drawing in, prediction, every layer and neighbours out.

    python benchmarks/explorer_latency.py [--model seed_cnn/plain/s0] [--updates 40] [--no-browser]

Starts the explorer's app under uvicorn on a free port of 127.0.0.1, as `make
explore` does, and measures the same request two ways: from Python over HTTP
(the server's own share reported beside it), and from headless Chromium while
selenium draws on the pad (what the page itself measures with
performance.now() around each fetch). Also times a click on a unit (three
captum projections and its top digits). Uses the named trained run if the lab
has one, else a seed CNN with random weights (speed does not depend on them);
the digits are the offline sample unless --digits auto.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from explorer.__main__ import free_port
from explorer.app import POOL_SIZE, Explorer, create_app
from explorer.catalog import Catalog, LoadedModel, ModelNotFoundError
from explorer.digits import SOURCES, load_test_digits

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


class RandomSeedCnn(Catalog):
    """A catalog whose every model is one seed CNN with random weights, built once (as loaded models are kept)."""

    def __init__(self):
        from conv_core.models import build_model

        super().__init__()
        torch.manual_seed(0)
        self.network = build_model("seed_cnn").eval()

    def load(self, ref: str) -> LoadedModel:
        return self._loaded.setdefault(ref, LoadedModel(ref, ref, "random weights", self.network))


def summary(times_ms: list[float]) -> str:
    times = sorted(times_ms)
    return (f"median {statistics.median(times):6.1f} ms   p90 {times[int(0.9 * (len(times) - 1))]:6.1f} ms   "
            f"max {times[-1]:6.1f} ms   ({len(times)} updates)")


def strokes(updates: int, size: int = 112) -> list[np.ndarray]:
    """A pad being drawn on: a 4 growing point by point, one image per update."""
    path = [(20 + i, 30) for i in range(0, 50, 2)] + [(70, 30 - i // 2) for i in range(0, 40, 2)] + \
           [(30 + i, 70 - i // 3) for i in range(0, 70, 2)]
    pad = np.zeros((size, size), dtype=np.uint8)
    images = []
    for step in range(updates):
        y, x = path[step * len(path) // updates]
        pad[max(0, y - 4):y + 4, max(0, x - 4):x + 4] = 255
        images.append(pad.copy())
    return images


def post(url: str, body: dict) -> tuple[dict, float]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request) as response:
        answer = json.loads(response.read())
    return answer, (time.perf_counter() - started) * 1000


def over_http(base: str, model: str, updates: int) -> None:
    def drawing(image):
        return {"width": image.shape[1], "height": image.shape[0], "pixels": base64.b64encode(image.tobytes()).decode()}

    images = strokes(updates)
    post(f"{base}/api/think", {"model": model, "drawing": drawing(images[-1])})  # warm-up: the model, its features
    round_trips, server = [], []
    for image in images:
        answer, ms = post(f"{base}/api/think", {"model": model, "drawing": drawing(image)})
        round_trips.append(ms)
        server.append(answer["server_ms"])
    print(f"update over HTTP (Python client):  {summary(round_trips)}")
    print(f"  of which the server's work:      {summary(server)}")
    clicks = []
    for layer, unit in (("conv1", [0, 14, 14]), ("conv2", [3, 7, 7]), ("pool2", [5, 3, 3]), ("logits", [4])):
        _, ms = post(f"{base}/api/unit", {"model": model, "drawing": drawing(images[-1]), "layer": layer, "unit": unit})
        clicks.append(ms)
    print(f"unit click (3 maps + top digits):  {summary(clicks)}")


def in_browser(base: str, updates: int) -> None:
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        driver.get(base + "/")
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.getElementById('model').value"))
        pad = driver.find_element("id", "pad")
        # Slow strokes (a pause per move) so each debounced update is its own round trip.
        while driver.execute_script("return window.explorer.timings.length") < updates + 1:
            actions = ActionChains(driver, duration=0).move_to_element_with_offset(pad, -90, -90).click_and_hold()
            for step in range(12):
                actions.move_by_offset(14, 12).pause(0.06)
            actions.release().perform()
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return window.explorer.settled()"))
        timings = driver.execute_script("return window.explorer.timings")[1:]  # the first loaded the model
    finally:
        driver.quit()
    print(f"update in Chromium (the page's own clock): {summary([t['round_trip_ms'] for t in timings])}")
    print(f"  of which the server's work:              {summary([t['server_ms'] for t in timings])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="seed_cnn/plain/s0", help="a run name, run id or models:/ URI")
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--digits", choices=SOURCES, default="sample")
    parser.add_argument("--pool", type=int, default=POOL_SIZE)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as `python -m explorer` serves

    import uvicorn

    catalog: Catalog = Catalog()
    try:
        catalog.load(args.model)
        print(f"model {args.model}")
    except ModelNotFoundError:
        catalog = RandomSeedCnn()
        print(f"model: the seed CNN with random weights ({args.model} is not in this lab)")
    digits = load_test_digits(args.digits)
    print(f"digits: {digits.description}; {min(args.pool, len(digits))} searched for neighbours")
    print(f"torch threads: {torch.get_num_threads()}, CPUs: {os.cpu_count()}")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Explorer(catalog, digits, args.model, pool_size=args.pool)),
                                           host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        over_http(base, args.model, args.updates)
        if not args.no_browser and CHROMIUM.exists() and CHROMEDRIVER.exists():
            in_browser(base, args.updates)
        elif not args.no_browser:
            print("no /usr/bin/chromium or /usr/bin/chromedriver: browser round trip not measured")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


if __name__ == "__main__":
    main()
