"""The import contract of the three layers, enforced on the sources.

    conv_core            pure torch: imports nothing of ours, never dagster or mlflow
    pipelines.resources  resources, IO manager, paths, tracking: conv_core only
    assets               thin Dagster adapters: conv_core and pipelines.resources
    pipelines            Definitions, jobs and commands on top: anything but explorer
    explorer             the interactive explorer (`make explore`): conv_core and pipelines.resources

`python tests/test_layering.py` prints the import graph between the layers.
"""

import ast
import pathlib
import subprocess
import sys
from collections import defaultdict

REPO = pathlib.Path(__file__).resolve().parents[1]
CORE = REPO / "conv_core"
FORBIDDEN = ("dagster", "mlflow")
# Layer -> the layers it may import (besides itself), bottom to top.
LAYERS = {
    "conv_core": set(),
    "pipelines.resources": {"conv_core"},
    "assets": {"conv_core", "pipelines.resources"},
    "pipelines": {"conv_core", "pipelines.resources", "assets"},
    # The interactive explorer: a web app beside the pipelines, which nothing of ours imports.
    "explorer": {"conv_core", "pipelines.resources"},
}


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to (the most specific match), or None if not ours."""
    matches = [layer for layer in LAYERS if module == layer or module.startswith(layer + ".")]
    return max(matches, key=len) if matches else None


def imported_modules(path: pathlib.Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from assets import checks` imports assets.checks: count the package either way.
            names.append(node.module)
    return names


def layer_imports(root: pathlib.Path = REPO) -> dict[tuple[str, str], set[str]]:
    """(importing layer, imported layer) -> the files that do it, over every source of ours."""
    edges = defaultdict(set)
    for package in ("conv_core", "assets", "pipelines", "explorer"):
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            source = layer_of(module)
            for name in imported_modules(path):
                target = layer_of(name)
                if target and target != source:
                    edges[(source, target)].add(str(path.relative_to(root)))
    return edges


def forbidden(edges: dict) -> dict[str, list[str]]:
    return {f"{source} -> {target}": sorted(files) for (source, target), files in edges.items()
            if target not in LAYERS[source]}


def test_each_layer_imports_only_the_layers_below_it():
    assert not forbidden(layer_imports())


def test_the_layers_form_no_cycle():
    edges = {pair for pair in layer_imports()}
    for source, target in edges:
        assert (target, source) not in edges, f"{source} and {target} import each other"


def test_the_checker_finds_an_upward_import(tmp_path):
    """On a planted tree: a resource importing an asset, an asset importing the top layer."""
    for path, text in {"pipelines/resources/tracking.py": "from assets.training import load_trained\n",
                       "assets/training.py": "import pipelines.definitions\nfrom conv_core import train\n",
                       "conv_core/train.py": "import torch\n"}.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    assert forbidden(layer_imports(tmp_path)) == {
        "pipelines.resources -> assets": ["pipelines/resources/tracking.py"],
        "assets -> pipelines": ["assets/training.py"]}


def test_conv_core_sources_never_import_dagster_or_mlflow():
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        offenders += [f"{path.name}: {n}" for n in imported_modules(path) if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_importing_conv_core_loads_neither_package():
    code = ("import sys, pkgutil, importlib, conv_core\n"
            "for m in pkgutil.walk_packages(conv_core.__path__, 'conv_core.'): importlib.import_module(m.name)\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('dagster', 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


if __name__ == "__main__":
    for (source, target), files in sorted(layer_imports().items()):
        verdict = "ok" if target in LAYERS[source] else "FORBIDDEN"
        print(f"{source:>20} -> {target:<20} {verdict:<9} ({len(files)} files)")
