"""What every benchmark under ``bench/`` needs to run on this machine without disturbing anything else:
its own database and vhost (created, migrated, dropped), its servers as subprocesses on free loopback ports
(ready when ``/readyz`` answers), their peak memory, and figures in DESIGN.md's result format.

Imported by the benchmark scripts (``python bench/<name>.py`` puts ``bench/`` on the path).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("RESTOCK_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_ROOT = os.environ.get("RESTOCK_BENCH_AMQP_ROOT", "amqp://guest:guest@127.0.0.1:5672")
READY_TIMEOUT_S = 60.0


def rabbitmqctl(*args: str) -> None:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([ctl, "-q", *args], check=True, capture_output=True, timeout=60)


async def drop_database(name: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def database_url(name: str) -> str:
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def run_checked(argv: list[str], env: dict[str, str]) -> str:
    """Run a command with the benchmark's env; its stdout, or an error with the tail of its stderr."""
    done = subprocess.run(
        argv, env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def migrate(env: dict[str, str]) -> None:
    run_checked([sys.executable, "-m", "restock_common.migrate"], env)


def cleanup(step: str, action: Any) -> None:
    """Run one cleanup step; a failure is a warning, so one failed step never leaves the next behind."""
    try:
        action()
    except Exception as error:
        print(f"warning: could not {step}: {error}", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Service:
    """A server subprocess on a loopback port."""

    process: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def peak_rss_mib(self) -> float:
        """``VmHWM`` of the process: the most resident memory it ever had."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024


@contextmanager
def service(argv: list[str], env: dict[str, str], stop_timeout: float = 30.0) -> Iterator[Service]:
    """Start a server, wait until ``/readyz`` answers 200, stop it gracefully (SIGTERM) at the end, killing
    it after ``stop_timeout``."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, *argv],
            env={**os.environ, **env, "RESTOCK_HTTP_PORT": str(port)},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        running = Service(process, port, log)
        try:
            _wait_ready(running)
            yield running
        finally:
            process.terminate()
            try:
                process.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(running: Service) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise RuntimeError(f"server exited with {running.process.returncode}:\n{running.log_tail()}")
        with suppress(httpx.HTTPError):
            if httpx.get(f"{running.url}/readyz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {READY_TIMEOUT_S} s:\n{running.log_tail()}")


def metric(value: float, unit: str, baseline: float | None = None) -> dict[str, Any]:
    """One figure in DESIGN.md's result format; ``ratio`` is value / baseline."""
    return {
        "value": round(value, 3),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 3),
        "ratio": round(value / baseline, 3) if baseline else None,
    }


def run_async(coroutine: Any) -> Any:
    return asyncio.run(coroutine)
