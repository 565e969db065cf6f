"""Start a ComfyUI server as a child process on 127.0.0.1, wait until it serves, stop it by PID."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


class ServerStartError(RuntimeError):
    """ComfyUI did not come up; the message carries the end of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerConfig:
    comfyui_dir: Path
    base_directory: Path | None = None
    extra_model_paths: list[Path] = field(default_factory=list)
    python: str = sys.executable
    cpu: bool = True
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    start_timeout: float = 180.0


def _own_process_group() -> dict:
    # A group of its own lets stop() reach ComfyUI's children too, and keeps Ctrl-C in a terminal for us.
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _signal_group(p: subprocess.Popen, polite: bool) -> None:
    try:
        if os.name == "nt":
            p.terminate() if polite else p.kill()
        else:
            os.killpg(p.pid, signal.SIGINT if polite else signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class ComfyServer:
    """A ComfyUI process owned by this object. Use as a context manager, or call start()/stop()."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, port: int) -> list[str]:
        c = self.config
        args = [c.python, str(Path(c.comfyui_dir) / "main.py"), "--listen", "127.0.0.1", "--port", str(port),
                "--disable-auto-launch"]
        if c.cpu:
            args.append("--cpu")
        if c.base_directory is not None:
            # ComfyUI's default database lives in its own folder; keep every write under the base directory.
            database = Path(c.base_directory) / "user" / "comfyui.db"
            args += ["--base-directory", str(c.base_directory), "--database-url", f"sqlite:///{database}"]
        for path in c.extra_model_paths:
            args += ["--extra-model-paths-config", str(path)]
        return args + list(c.extra_args)

    def start(self) -> ComfyServer:
        c = self.config
        self.port = free_port()
        log_path = c.log_path or Path(c.base_directory or ".") / "comfyui.log"
        self._log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **c.env}
        cmd = self.command(self.port)
        logger.info("starting ComfyUI: %s", " ".join(cmd))
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd, cwd=str(c.comfyui_dir), env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, **_own_process_group(),
        )
        self.log_path = log_path
        deadline = time.monotonic() + c.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(f"ComfyUI exited with code {self.process.returncode} during start-up.\n"
                                       f"{self.log_tail()}")
            if self._serving():
                logger.info("ComfyUI serving at %s (pid %d)", self.url, self.process.pid)
                return self
            time.sleep(0.25)
        self.stop()
        raise ServerStartError(f"ComfyUI did not answer within {c.start_timeout:.0f}s.\n{self.log_tail()}")

    def _serving(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/system_stats", timeout=2) as r:  # noqa: S310 - loopback only
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def log_text(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        try:
            return Path(self.log_path).read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server by its PID (its whole process group), politely first."""
        p = self.process
        if p is not None and p.poll() is None:
            for polite, wait in ((True, timeout), (False, 5.0)):
                _signal_group(p, polite)
                try:
                    p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
