"""`make report`: print the path of the latest lecture report (or say how to make one, exit 1)."""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.paths import storage_dir


def report_file() -> Path:
    """Where the `lecture_report` asset writes its HTML page (the newest one; MLflow keeps every one)."""
    return storage_dir() / "report" / "lecture_report.html"


def main() -> int:
    path = report_file()
    if not path.is_file():
        print(f"no lecture report at {path} yet: run `make run` first (it materialises lecture_report last)",
              file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
