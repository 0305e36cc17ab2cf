"""conv_core is the pure torch core: it must run and test without the orchestration stack."""

import ast
import pathlib
import subprocess
import sys

CORE = pathlib.Path(__file__).resolve().parents[1] / "conv_core"
FORBIDDEN = ("dagster", "mlflow")


def test_conv_core_sources_never_import_dagster_or_mlflow():
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_importing_conv_core_loads_neither_package():
    code = ("import sys, pkgutil, importlib, conv_core\n"
            "for m in pkgutil.iter_modules(conv_core.__path__): importlib.import_module('conv_core.' + m.name)\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('dagster', 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
