"""Reading the log files that tests give to the processes they start."""

from pathlib import Path


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a log, for an assertion message."""
    return path.read_text(errors="replace")[-chars:] if path.is_file() else f"({path} missing)"
