"""Processes that tests start and own: free ports, waiting for a server to answer, stopping a process group, and
a real `mlflow server` on 127.0.0.1 that a test can kill and bring back on the same port and store."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.logs import tail

BIN = Path(sys.executable).parent  # the venv's console scripts: ray, mlflow
HOST = "127.0.0.1"
START_TIMEOUT_S = 120  # a loaded 2-core machine takes 5-30 s to start a server
STOP_TIMEOUT_S = 30
POLL_S = 1.0


def free_ports(count: int) -> list[int]:
    """Distinct ports free now (all sockets are held open until every port is chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_until_up(url: str, process: subprocess.Popen, log: Path, headers: dict | None = None) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it exits or times out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        assert process.poll() is None, f"{process.args[:3]} exited with {process.returncode}:\n{tail(log)}"
        assert time.monotonic() < deadline, f"{url} not up after {START_TIMEOUT_S} s:\n{tail(log)}"
        time.sleep(POLL_S)


def stop_group(process: subprocess.Popen, leader_only: bool) -> None:
    """SIGTERM (to the leader, or to its whole process group), then SIGKILL to the group for whatever is left.

    The group is the one `start_new_session=True` created for this process: it holds only what this test started.
    """
    group = process.pid
    try:
        if leader_only:
            process.terminate()
        else:
            os.killpg(group, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(timeout=STOP_TIMEOUT_S)


class MlflowServer:
    """`mlflow server` on 127.0.0.1: runs in SQLite, artifacts uploaded through the server (--serve-artifacts is the
    default) into a folder of its own, so clients need no access to it. `kill()` and `start()` again keep the port
    and the store, as a restarted tracking server would."""

    def __init__(self, folder: Path):
        (self.port,) = free_ports(1)
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> "MlflowServer":
        command = [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.folder / "artifacts"),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with open(self.log, "a") as out:
            self.process = subprocess.Popen(
                command, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until_up(f"{self.uri}/health", self.process, self.log)
        return self

    def kill(self) -> None:
        """SIGKILL to the server and its workers: a crash, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process, leader_only=False)
