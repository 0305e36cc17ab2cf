"""`make report`: print the path of the latest lecture report (or say how to make one, exit 1)."""

from __future__ import annotations

import sys
from pipelines.resources.paths import report_file


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
