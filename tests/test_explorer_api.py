"""The explorer's JSON API through Starlette's TestClient, checked against conv_core on the same inputs.

The lab here is tiny and fake but stored the real way: a seed CNN with random
weights as the IO manager stores a `trained_model` value, beside its MLflow run
`seed_cnn/plain/s0`; an MLP only as a model logged in MLflow (run
`mlp/plain/s0`), so both ways of loading are used. The test digits are
synthetic (sixty smooth blobs), which is all the arithmetic needs.
"""

from __future__ import annotations

import atexit
import base64
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from conv_core.evaluate import layer_activations
from conv_core.experiments import Experiment
from conv_core.export import portable_model
from conv_core.gradients import receptive_field, unit_projections
from conv_core.models import LayerNet, build_model
from explorer.app import Explorer, create_app
from explorer.catalog import Catalog
from explorer.digits import Digits, load_test_digits
from explorer.encoding import read_floats
from explorer.preprocess import centre_of_mass, mnist_style
from pipelines.resources.tracking import MlflowTracking

CNN_LAYERS = ["conv1", "pool1", "conv2", "pool2", "logits"]
LECTURE_SHAPES = ["28x28x9", "14x14x9", "14x14x16", "7x7x16", "10"]


@dataclass(frozen=True)
class Lab:
    home: Path
    cnn: LayerNet
    mlp: LayerNet
    mlp_uri: str
    digits: Digits

    def explorer(self, pool_size: int = 40) -> Explorer:
        tracking = MlflowTracking(tracking_uri=f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}")
        return Explorer(Catalog(tracking, storage=self.home / "storage"), self.digits, pool_size=pool_size)


def synthetic_digits(count: int = 60) -> Digits:
    """Smooth random blobs with ink in the middle, like digits to a network that has learnt nothing."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(count, 1, 28, 28, generator=generator)
    blurred = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2)[:, 0]
    mask = torch.zeros(28, 28)
    mask[4:24, 6:22] = 1
    images = ((blurred - 0.45).clamp(0, 1) * 4 * mask).clamp(0, 1)
    return Digits((images * 255).to(torch.uint8), torch.arange(count) % 10, "sixty synthetic test digits")


@functools.lru_cache(maxsize=1)
def tiny_lab() -> Lab:
    """Built once per test process (the browser test uses it too): a fresh MLflow store costs seconds."""
    home = Path(tempfile.mkdtemp(prefix="convlab-explorer-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    tracking = MlflowTracking(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    torch.manual_seed(0)
    cnn, mlp = build_model("seed_cnn").eval(), build_model("mlp").eval()
    with tracking.training_run(Experiment.parse("seed_cnn.plain.s0"), "test", {"model": "seed_cnn"}) as run:
        run.log_metrics({"test_accuracy": 0.1})
    stored = home / "storage" / "trained_model" / "seed_cnn.plain.s0.pt"
    stored.parent.mkdir(parents=True)
    torch.save({"model": "seed_cnn", "state_dict": cnn.state_dict(), "mlflow_run_id": run.run_id}, stored)
    with tracking.training_run(Experiment.parse("mlp.plain.s0"), "test", {"model": "mlp"}) as run:
        mlp_uri = run.log_model(portable_model(mlp), input_example=torch.rand(2, 1, 28, 28).numpy())
    return Lab(home, cnn, mlp, mlp_uri, synthetic_digits())


@pytest.fixture(scope="module")
def lab() -> Lab:
    return tiny_lab()


@pytest.fixture(scope="module")
def client(lab):
    from starlette.testclient import TestClient

    with TestClient(create_app(lab.explorer())) as test_client:
        yield test_client


def drawing_payload(image: np.ndarray) -> dict:
    height, width = image.shape
    return {"width": width, "height": height, "pixels": base64.b64encode(image.astype(np.uint8).tobytes()).decode()}


def a_small_stroke(size: int = 112) -> np.ndarray:
    """A thick slanted bar drawn small in the pad's top-left corner."""
    pad = np.zeros((size, size), dtype=np.uint8)
    for t in range(30):
        pad[10 + t:16 + t, 12 + t // 3:18 + t // 3] = 255
    return pad


def digit_input(lab: Lab, index: int) -> torch.Tensor:
    return lab.digits.images[index].float() / 255


# ----------------------------------------------------------------------------- models and digits


def test_models_lists_the_lab_runs_with_the_seed_cnn_first_choice(client):
    answer = client.get("/api/models").json()
    assert answer["default"] == "seed_cnn/plain/s0" and answer["comparison"] == "mlp/plain/s0"
    assert {run["name"] for run in answer["runs"]} == {"seed_cnn/plain/s0", "mlp/plain/s0"}
    assert answer["test_digits"] == 60 and answer["searched_digits"] == 40


def test_the_strip_has_test_digits_of_every_class(client, lab):
    digits = client.get("/api/digits?per_class=2").json()["digits"]
    assert [d["label"] for d in digits] == list(range(10)) * 2
    first = digits[0]
    pixels = np.frombuffer(base64.b64decode(first["image"]), dtype=np.uint8).reshape(28, 28)
    assert np.array_equal(pixels, lab.digits.images[first["index"]].numpy())


# ----------------------------------------------------------------------------- one input forward


def test_think_gives_every_layer_in_the_lectures_shapes_equal_to_conv_core(client, lab):
    answer = client.post("/api/think", json={"digit": 7}).json()
    image = digit_input(lab, 7)
    assert [layer["name"] for layer in answer["layers"]] == CNN_LAYERS
    assert [layer["label"] for layer in answer["layers"]] == LECTURE_SHAPES
    expected = layer_activations(lab.cnn, image[None], ["relu1", "pool1", "relu2", "pool2", "fc1"])
    for layer in answer["layers"]:
        signal = read_floats(layer["signal"])
        assert signal.shape == tuple(layer["shape"])
        np.testing.assert_allclose(signal, expected[layer["stage"]][0].numpy(), rtol=1e-5, atol=1e-6)
    probabilities = torch.softmax(lab.cnn(image[None, None]), dim=1)[0].detach().numpy()
    np.testing.assert_allclose(answer["probabilities"], probabilities, rtol=1e-5, atol=1e-7)
    assert answer["prediction"] == int(probabilities.argmax())
    assert answer["input"] == {"kind": "digit", "index": 7, "label": 7,
                               "image": base64.b64encode(lab.digits.images[7].numpy().tobytes()).decode()}


def test_a_drawing_is_fitted_in_20x20_and_centred_by_mass_before_the_network_sees_it(client, lab):
    pad = a_small_stroke()
    answer = client.post("/api/think", json={"drawing": drawing_payload(pad)}).json()
    seen = np.frombuffer(base64.b64decode(answer["input"]["image"]), dtype=np.uint8).reshape(28, 28)
    expected = mnist_style(torch.from_numpy(pad))
    assert np.array_equal(seen, (expected * 255).round().to(torch.uint8).numpy())
    rows, cols = np.nonzero(expected.numpy() > 0.05)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 == 20
    y, x = centre_of_mass(expected)
    assert abs(y - 14) <= 0.5 and abs(x - 14) <= 0.5
    probabilities = torch.softmax(lab.cnn(expected[None, None]), dim=1)[0].detach().numpy()
    np.testing.assert_allclose(answer["probabilities"], probabilities, rtol=1e-5, atol=1e-7)


def test_an_mnist_digit_drawn_small_and_off_centre_comes_back_as_itself():
    digit = torch.zeros(28, 28)
    digit[4:24, 9:19] = torch.linspace(0.2, 1, 10)  # a 20x10 box, lighter on the left
    pad = torch.zeros(140, 140)
    pad[10:50, 80:100] = torch.nn.functional.interpolate(digit[None, None, 4:24, 9:19], size=(40, 20))[0, 0]
    restored = mnist_style(pad)
    assert (restored > 0.05).nonzero()[:, 0].unique().numel() == 20  # 20 rows tall again
    y, x = centre_of_mass(restored)
    assert abs(y - 14) <= 0.5 and abs(x - 14) <= 0.5


# ----------------------------------------------------------------------------- neighbours


def test_neighbours_are_the_nearest_test_digits_in_pixels_and_in_a_layer(client, lab):
    answer = client.post("/api/think", json={"digit": 5, "neighbour_layer": "conv2", "k": 4}).json()
    neighbours = answer["neighbours"]
    assert neighbours["layer"] == "conv2"
    assert neighbours["pixels"][0]["index"] == 5 and neighbours["pixels"][0]["distance"] == pytest.approx(0, abs=1e-3)
    pool = lab.digits.images[:40]
    features = layer_activations(lab.cnn, pool, ["relu2"])["relu2"].flatten(1)
    query = layer_activations(lab.cnn, lab.digits.images[5:6], ["relu2"])["relu2"].flatten(1)
    # the exact distances (cdist's matrix-product shortcut is off by 1e-3 near 0 on some CPUs)
    exact = torch.cdist(query, features, compute_mode="donot_use_mm_for_euclid_dist")
    distances, indices = exact[0].topk(4, largest=False)
    assert [n["index"] for n in neighbours["features"]] == indices.tolist()
    np.testing.assert_allclose([n["distance"] for n in neighbours["features"]], distances.numpy(), rtol=1e-3, atol=1e-3)
    assert all(n["label"] == n["index"] % 10 for n in neighbours["features"])


def test_the_neighbour_layer_defaults_to_the_last_before_the_logits(client):
    answer = client.post("/api/think", json={"digit": 1}).json()
    assert answer["neighbours"]["layer"] == "pool2"
    assert answer["neighbour_layers"] == ["pixels"] + CNN_LAYERS


# ----------------------------------------------------------------------------- one unit


def test_a_units_maps_and_top_digits_equal_conv_core(client, lab):
    unit = [3, 7, 6]
    answer = client.post("/api/unit", json={"digit": 2, "layer": "conv2", "unit": unit, "k": 5}).json()
    image = digit_input(lab, 2)
    expected = unit_projections(lab.cnn, image, "relu2", tuple(unit))
    assert set(answer["maps"]) == {"gradient", "deconvnet", "guided_backprop"}
    for rule, payload in answer["maps"].items():
        np.testing.assert_allclose(read_floats(payload), expected[rule].numpy(), rtol=1e-4, atol=1e-6)
    assert answer["receptive_field"] == list(receptive_field(lab.cnn, "relu2", 7, 6))
    activations = layer_activations(lab.cnn, lab.digits.images[:40], ["relu2"])["relu2"][:, 3, 7, 6]
    values, indices = activations.topk(5)
    assert [entry["index"] for entry in answer["top"]] == indices.tolist()
    np.testing.assert_allclose([entry["value"] for entry in answer["top"]], values.numpy(), rtol=1e-5)
    own = layer_activations(lab.cnn, image[None], ["relu2"])["relu2"][0, 3, 7, 6]
    assert answer["activation"] == pytest.approx(float(own), abs=1e-6)


def test_a_logit_is_a_unit_too(client, lab):
    answer = client.post("/api/unit", json={"digit": 4, "layer": "logits", "unit": [4]}).json()
    assert answer["receptive_field"] is None
    gradient = read_floats(answer["maps"]["gradient"])
    expected = unit_projections(lab.cnn, digit_input(lab, 4), "fc1", (4,))["gradient"]
    np.testing.assert_allclose(gradient, expected.numpy(), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- a logged model


@pytest.mark.parametrize("ref", ["mlp/plain/s0", "uri"])
def test_a_model_logged_in_mlflow_loads_by_run_name_and_by_uri(client, lab, ref):
    ref = lab.mlp_uri if ref == "uri" else ref
    answer = client.post("/api/think", json={"model": ref, "digit": 3, "neighbours": False}).json()
    assert "MLflow model models:/" in answer["model"]["source"] and answer["model"]["architecture"] == "mlp"
    assert [layer["label"] for layer in answer["layers"]] == ["225", "144", "10"]
    probabilities = torch.softmax(lab.mlp(digit_input(lab, 3)[None, None]), dim=1)[0].detach().numpy()
    np.testing.assert_allclose(answer["probabilities"], probabilities, rtol=1e-5, atol=1e-7)
    assert "neighbours" not in answer


def test_the_seed_cnn_comes_from_the_stored_trained_model_value(client):
    answer = client.post("/api/think", json={"model": "seed_cnn/plain/s0", "digit": 0}).json()
    assert answer["model"]["source"].startswith("weights stored by the IO manager at ")


# ----------------------------------------------------------------------------- bad input


def _blank_drawing():
    return {"drawing": drawing_payload(np.zeros((50, 50)))}


@pytest.mark.parametrize("body, status, says", [
    (_blank_drawing(), 422, "the drawing is empty"),
    ({"model": "seed_cnn/plain/s9", "digit": 0}, 404, "no trained model named 'seed_cnn/plain/s9'"),
    ({"model": "models:/m-doesnotexist", "digit": 0}, 404, "MLflow could not load models:/m-doesnotexist"),
    ({}, 400, "give an input"),
    ({"digit": 60}, 400, "index of a test digit, 0 to 59"),
    ({"drawing": {"width": 10, "height": 10, "pixels": "%%%"}}, 400, "not valid base64"),
    ({"drawing": {"width": 10, "height": 10, "pixels": base64.b64encode(bytes(99)).decode()}}, 400,
     "expected 100 pixels"),
    ({"drawing": {"width": 5000, "height": 10, "pixels": ""}}, 400, "width and height"),
    ({"digit": 0, "neighbour_layer": "conv7"}, 400, "no layer 'conv7'"),
    ({"digit": 0, "k": 0}, 400, "k is a whole number"),
])
def test_bad_input_is_a_clear_4xx_message(client, body, status, says):
    response = client.post("/api/think", json=body)
    assert response.status_code == status
    assert says in response.json()["error"]


@pytest.mark.parametrize("body, says", [
    ({"digit": 0, "layer": "conv2", "unit": [16, 0, 0]}, "conv2 has units (channel, y, x) below (16, 14, 14)"),
    ({"digit": 0, "layer": "conv2", "unit": "3"}, "name a unit"),
    ({"digit": 0, "layer": "fc9", "unit": [1]}, "no layer 'fc9'"),
])
def test_a_unit_the_model_lacks_is_a_clear_400(client, body, says):
    response = client.post("/api/unit", json=body)
    assert response.status_code == 400 and says in response.json()["error"]


def test_a_body_that_is_not_json_and_an_unknown_path_answer_json(client):
    response = client.post("/api/think", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json() == {"error": "the request body is not JSON"}
    response = client.get("/api/nothing-here")
    assert response.status_code == 404 and response.json()["error"] == "Not Found: /api/nothing-here"


# ----------------------------------------------------------------------------- the page and the digit source


def test_the_page_and_its_files_are_served_and_name_no_other_host(client):
    texts = [client.get(path) for path in ("/", "/static/explorer.js", "/static/explorer.css")]
    assert all(response.status_code == 200 for response in texts)
    assert 'id="pad"' in texts[0].text
    for response in texts:
        assert "http://" not in response.text and "https://" not in response.text


def test_test_digits_come_from_the_stored_mnist_value_when_there_is_one(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVLAB_HOME", str(tmp_path))
    value = {"test_images": torch.zeros(3, 28, 28, dtype=torch.uint8), "test_labels": torch.tensor([4, 2, 0]),
             "provenance": {"description": "three blank digits"}}
    (tmp_path / "storage" / "mnist").mkdir(parents=True)
    torch.save(value, tmp_path / "storage" / "mnist" / "value.pt")
    digits = load_test_digits()
    assert digits.labels.tolist() == [4, 2, 0] and "three blank digits" in digits.description
    assert digits.strip(per_class=1) == [2, 1, 0]
