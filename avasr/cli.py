"""What every entry point shares: a user's mistake (a bad manifest, config, file or space) ends with one clear
line on stderr and exit status 1, not a traceback. Programming errors (other types) still show their traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

USER_ERRORS = (ValueError, RuntimeError, OSError)  # every avasr error type derives from one of these
FAILED = 1


def run(main: Callable[[], object]) -> None:
    try:
        status = main()
    except USER_ERRORS as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        raise SystemExit(FAILED) from None
    raise SystemExit(status if isinstance(status, int) else 0)
