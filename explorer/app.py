"""The explorer's routes: the page (static files, nothing from the network) and a JSON API.

    GET  /api/models   the trained runs to choose from, the defaults, where the digits come from
    GET  /api/digits   a strip of test digits to pick instead of drawing (?per_class=2)
    POST /api/think    one input through one model: probabilities, every layer, nearest test digits
    POST /api/unit     one unit on that input: its three projections and its top-activating digits

An input is {"drawing": {"width", "height", "pixels"}} (the pad, preprocessed
the MNIST way) or {"digit": i} (test digit i as it is). Every failure is
answered as {"error": "..."} with a 4xx status saying whose fault it is, so
the page can show it; nothing answers with a stack trace.

Handlers compute on the event loop, one request at a time, on purpose: a
request takes milliseconds, and captum's temporary hooks on a model's ReLUs
must not meet another request's forward pass.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from json import JSONDecodeError
from pathlib import Path

import torch
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from explorer import encoding
from explorer.catalog import COMPARISON_MODEL, DEFAULT_MODEL, Catalog, LoadedModel, ModelNotFoundError
from explorer.digits import Digits
from explorer.inspection import PIXELS, BadUnitError, Inspector
from explorer.preprocess import EmptyDrawingError, mnist_style

STATIC = Path(__file__).parent / "static"
MAX_NEIGHBOURS = 32
POOL_SIZE = 2000  # test digits searched for neighbours and top activations (conv1 features: 56 MB)


class Explorer:
    """What the routes share: the catalog of models, the test digits, one inspector per loaded model."""

    def __init__(self, catalog: Catalog, digits: Digits, default_model: str = DEFAULT_MODEL,
                 comparison_model: str = COMPARISON_MODEL, pool_size: int = POOL_SIZE, keep: int = 4):
        self.catalog = catalog
        self.digits = digits
        self.pool = digits.first(pool_size)
        self.default_model = default_model
        self.comparison_model = comparison_model
        self.keep = keep
        self._inspectors: OrderedDict[str, tuple[LoadedModel, Inspector]] = OrderedDict()

    def inspector(self, ref) -> tuple[LoadedModel, Inspector]:
        if ref is not None and not isinstance(ref, str):
            raise encoding.BadPayloadError("model is a run name, a run id or a models:/ URI")
        loaded = self.catalog.load(ref or self.default_model)
        cached = self._inspectors.get(loaded.ref)
        if cached is None or cached[0] is not loaded:
            cached = (loaded, Inspector(loaded.network, self.pool))
            self._inspectors[loaded.ref] = cached
            while len(self._inspectors) > self.keep:
                self._inspectors.popitem(last=False)
        self._inspectors.move_to_end(loaded.ref)
        return cached

    def image(self, body: dict) -> tuple[torch.Tensor, dict]:
        """The 28x28 input in [0, 1] a request names, and what it was."""
        if "drawing" in body:
            return mnist_style(encoding.drawing(body["drawing"])), {"kind": "drawing", "label": None}
        if "digit" in body:
            index = body["digit"]
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.digits):
                raise encoding.BadPayloadError(f"digit is the index of a test digit, 0 to {len(self.digits) - 1}; "
                                               f"got {index!r}")
            return self.digits.images[index].float() / 255, {"kind": "digit", "index": index,
                                                              "label": int(self.digits.labels[index])}
        raise encoding.BadPayloadError('give an input: {"drawing": {"width", "height", "pixels"}} or {"digit": index}')

    def with_images(self, entries: list[dict]) -> list[dict]:
        return [{**entry, "image": encoding.grey(self.pool.images[entry["index"]])} for entry in entries]


async def _body(request: Request) -> dict:
    try:
        body = await request.json()
    except (JSONDecodeError, UnicodeDecodeError):
        raise encoding.BadPayloadError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise encoding.BadPayloadError("the request body is a JSON object")
    return body


def _count(body: dict, key: str, default: int, most: int) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise encoding.BadPayloadError(f"{key} is a whole number from 1 to {most}, got {value!r}")
    return value


def _model_facts(loaded: LoadedModel) -> dict:
    return {"ref": loaded.ref, "label": loaded.label, "source": loaded.source, "architecture": loaded.network.name}


def create_app(explorer: Explorer) -> Starlette:
    """The Starlette app over one `Explorer`."""

    async def page(request: Request):
        return FileResponse(STATIC / "index.html")

    async def models(request: Request):
        runs = [run.as_dict() for run in explorer.catalog.runs()]
        return JSONResponse({"default": explorer.default_model, "comparison": explorer.comparison_model,
                             "runs": runs, "tracking_uri": explorer.catalog.where(),
                             "digits": explorer.digits.description, "test_digits": len(explorer.digits),
                             "searched_digits": len(explorer.pool)})

    async def digits(request: Request):
        try:
            per_class = int(request.query_params.get("per_class", 2))
        except ValueError:
            raise encoding.BadPayloadError("per_class is a whole number") from None
        if not 1 <= per_class <= 10:
            raise encoding.BadPayloadError(f"per_class is from 1 to 10, got {per_class}")
        strip = explorer.digits.strip(per_class)
        return JSONResponse({"digits": [{"index": i, "label": int(explorer.digits.labels[i]),
                                         "image": encoding.grey(explorer.digits.images[i])} for i in strip]})

    async def think(request: Request):
        started = time.perf_counter()
        body = await _body(request)
        loaded, inspector = explorer.inspector(body.get("model"))
        image, source = explorer.image(body)
        signals = inspector.think(image)
        answer = {
            "model": _model_facts(loaded),
            "input": {**source, "image": encoding.grey(image)},
            "probabilities": signals["probabilities"].tolist(),
            "prediction": int(signals["probabilities"].argmax()),
            "layers": [{"name": layer.name, "stage": layer.stage, "label": layer.label, "shape": list(layer.shape),
                        "signal": encoding.floats(signals["layers"][layer.name])} for layer in inspector.layers],
            "neighbour_layers": inspector.neighbour_layers,
        }
        if body.get("neighbours", True):
            layer = body.get("neighbour_layer") or inspector.default_neighbour_layer()
            k = _count(body, "k", 8, MAX_NEIGHBOURS)
            answer["neighbours"] = {
                "layer": layer,
                PIXELS: explorer.with_images(inspector.neighbours(signals, PIXELS, k)),
                "features": explorer.with_images(inspector.neighbours(signals, layer, k)),
            }
        answer["server_ms"] = (time.perf_counter() - started) * 1000
        return JSONResponse(answer)

    async def unit(request: Request):
        started = time.perf_counter()
        body = await _body(request)
        loaded, inspector = explorer.inspector(body.get("model"))
        image, source = explorer.image(body)
        name, unit = body.get("layer"), body.get("unit")
        if not isinstance(name, str) or not isinstance(unit, list) or not all(isinstance(i, int) for i in unit):
            raise encoding.BadPayloadError('name a unit: {"layer": "conv2", "unit": [channel, y, x]} '
                                           '(or [index] in a vector layer)')
        layer = inspector.layer(name)
        maps = inspector.unit_maps(image, name, unit)
        activation = inspector.think(image)["layers"][name].flatten()[layer.flat_index(unit)]
        return JSONResponse({
            "model": _model_facts(loaded), "input": source, "layer": name, "unit": unit,
            "activation": float(activation),
            "maps": {rule: encoding.floats(values) for rule, values in maps.items()},
            "receptive_field": inspector.receptive_field(name, unit),
            "top": explorer.with_images(inspector.top_activating(name, unit, _count(body, "k", 9, MAX_NEIGHBOURS))),
            "server_ms": (time.perf_counter() - started) * 1000,
        })

    def answer(status: int):
        async def handler(request: Request, error: Exception):
            return JSONResponse({"error": str(error)}, status_code=status)
        return handler

    async def http_error(request: Request, error: HTTPException):
        return JSONResponse({"error": f"{error.detail}: {request.url.path}"}, status_code=error.status_code)

    async def server_error(request: Request, error: Exception):
        return JSONResponse({"error": f"the explorer failed on this request ({type(error).__name__}: {error})"},
                            status_code=500)

    routes = [
        Route("/", page),
        Route("/api/models", models),
        Route("/api/digits", digits),
        Route("/api/think", think, methods=["POST"]),
        Route("/api/unit", unit, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {
        encoding.BadPayloadError: answer(400),
        BadUnitError: answer(400),
        ModelNotFoundError: answer(404),
        EmptyDrawingError: answer(422),
        HTTPException: http_error,
        Exception: server_error,
    }
    return Starlette(routes=routes, exception_handlers=handlers)
