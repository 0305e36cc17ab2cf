"""What a run was made with: library versions, the git commit, a config hash."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import warnings
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import dagster as dg

LIBRARIES = ("torch", "torchvision", "numpy", "dagster", "mlflow", "captum", "scikit-learn")


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The checkout's commit (with "+dirty" for uncommitted changes), or None outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def content_hash(*parts) -> str:
    """A short stable hash of JSON-serialisable parts (configs, provenance hashes)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def versioned_output(value, version: str, metadata: dict) -> dg.Output:
    """An Output whose DataVersion is `version`: a changed config or data marks downstream "Unsynced"."""
    # Output(data_version=...) is marked beta but is the documented way to do
    # this, so its warning is silenced here and only here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.Output(value, data_version=dg.DataVersion(version), metadata=metadata)
