"""What every entry point shares: a user's mistake (an AvasrError: a bad manifest, config, file or space) ends with
one clear line on stderr and exit status 1. Every other exception (a torch shape mismatch, an out-of-memory) is not
the user's to fix and keeps its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from avasr.errors import AvasrError

FAILED = 1


def run(main: Callable[[], object]) -> None:
    try:
        status = main()
    except AvasrError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        raise SystemExit(FAILED) from None
    raise SystemExit(status if isinstance(status, int) else 0)
