"""Run `ponder serve` as a child process (for tests, benchmarks and scripts).

    with ServerProcess("path/to/model.gguf", api_key="k") as srv:
        httpx.get(srv.url + "/health")
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, model: str, *args: str, host: str = "127.0.0.1", port: int | None = None,
                 api_key: str | None = None, startup_timeout: float = 180.0, log_path: str | None = None):
        self.model, self.host, self.port = model, host, port or free_port(host)
        self.api_key = api_key  # passed as PONDER_API_KEY, where `ps` does not show it
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def rss_bytes(self) -> int:
        """Resident memory of the server process, from /proc."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def start(self) -> ServerProcess:
        cmd = [sys.executable, "-m", "ponder.cli.main", "serve", "-m", self.model, "--host", self.host,
               "--port", str(self.port), *self.args]
        self._log = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL
        env = {k: v for k, v in os.environ.items() if k != "PONDER_API_KEY"}
        if self.api_key:
            env["PONDER_API_KEY"] = self.api_key
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=self._log, env=env)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ponder serve exited with {self.proc.returncode}" +
                                   (f" (log: {self.log_path})" if self.log_path else ""))
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1.0) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ponder serve did not become healthy in {self.startup_timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_path and self._log is not subprocess.DEVNULL:
            self._log.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
