"""Start the whole system as real processes: every service plus the sandbox.

``make run`` calls ``main()``: register the demo shop (with the access token the sandbox's Admin API
accepts), start the processes on the default ports, wait until each answers its readiness probe, seed
the demo store (a product, a sold-out level, a subscriber), print where to look, then stay in the
foreground; Ctrl-C (or SIGTERM) stops everything gracefully. The end-to-end tests use ``Stack`` with free
ports and their own database, vhost and Redis db.

An optional process (the SMS sender) that exits or is not ready in time is stopped, dropped from the
stack with a warning, and the rest runs on: email works without it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import asyncpg
import httpx

from restock_common.rules import Rules
from restock_common.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one stack."""

    admin: int = 8000
    detector: int = 8001
    dispatcher: int = 8002
    sender_email: int = 8003
    sandbox: int = 8025
    smtp: int = 2525
    sender_sms: int = 8004

    @classmethod
    def free(cls) -> Ports:
        """Ports the kernel reports free right now (for tests running beside ``make run``)."""
        sockets = [socket.socket() for _ in range(7)]
        try:
            for sock in sockets:
                sock.bind(("127.0.0.1", 0))
            return cls(*(sock.getsockname()[1] for sock in sockets))
        finally:
            for sock in sockets:
                sock.close()

    def env(self) -> dict[str, str]:
        """The RESTOCK_* variables that make every process agree on these ports."""
        return {
            "RESTOCK_SMTP_HOST": "127.0.0.1",
            "RESTOCK_SMTP_PORT": str(self.smtp),
            "RESTOCK_SHOPIFY_API_BASE_URL": f"http://127.0.0.1:{self.sandbox}",
            "RESTOCK_TWILIO_BASE_URL": f"http://127.0.0.1:{self.sandbox}/twilio",
            "RESTOCK_PUBLIC_BASE_URL": f"http://127.0.0.1:{self.admin}",
            "RESTOCK_SANDBOX_WEBHOOK_URL": f"http://127.0.0.1:{self.detector}/webhooks/shopify",
            "RESTOCK_SANDBOX_PROXY_URL": f"http://127.0.0.1:{self.admin}/proxy",
            "RESTOCK_SANDBOX_TWILIO_INBOUND_URL": f"http://127.0.0.1:{self.admin}/twilio/inbound",
        }


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the stack and the URL that says it is ready."""

    name: str
    argv: tuple[str, ...]
    port: int
    ready_path: str = "/readyz"
    optional: bool = False  # not ready in time: dropped with a warning instead of failing the stack


def process_specs(ports: Ports) -> list[ProcessSpec]:
    """Every process, sandbox first (the services' peers), in start order."""
    py = sys.executable
    return [
        ProcessSpec("sandbox", (py, "-m", "restock_sandbox"), ports.sandbox, "/healthz"),
        ProcessSpec("admin", (py, "-m", "restock_admin"), ports.admin),
        ProcessSpec("detector", (py, "-m", "restock_detector"), ports.detector),
        ProcessSpec("dispatcher", (py, "-m", "restock_dispatcher"), ports.dispatcher),
        ProcessSpec("sender-email", (py, "-m", "restock_sender", "--channel", "email"), ports.sender_email),
        ProcessSpec(
            "sender-sms", (py, "-m", "restock_sender", "--channel", "sms"), ports.sender_sms, optional=True
        ),
    ]


@dataclass
class Stack:
    """The running processes of one system; see the module's rules."""

    env: dict[str, str]
    ports: Ports
    log_dir: Path | None = None  # None: lines go to our stdout, prefixed with the process name
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    specs: dict[str, ProcessSpec] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)  # optional processes left out, and why

    def start(self, names: list[str] | None = None) -> None:
        """Start the named processes (all by default)."""
        for spec in process_specs(self.ports):
            if names is None or spec.name in names:
                self._start(spec)

    def _start(self, spec: ProcessSpec, extra_env: dict[str, str] | None = None) -> None:
        env = {
            **os.environ,
            **self._trace_export(),
            **self.env,
            **self.ports.env(),
            "RESTOCK_HTTP_PORT": str(spec.port),
            **(extra_env or {}),
        }
        stdout: int | IO[bytes] = subprocess.PIPE
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            stdout = (self.log_dir / f"{spec.name}.log").open("ab")
        process = subprocess.Popen(
            spec.argv, env=env, stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes[spec.name] = process
        self.specs[spec.name] = spec
        if self.log_dir is None:
            threading.Thread(target=_prefix_lines, args=(spec.name, process), daemon=True).start()

    def _trace_export(self) -> dict[str, str]:
        """Spans go to the sandbox's OTLP receiver (``GET /otlp/traces/{id}`` reads a whole trace), unless
        the user points OpenTelemetry elsewhere."""
        given = {**os.environ, **self.env}
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in given or "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in given:
            return {}
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.ports.sandbox}"}

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return when every started process answers its readiness probe; raise if a required one died or
        timed out (an optional one is dropped instead, see the module's rules)."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            for name, spec in sorted(self.specs.items(), key=lambda item: item[1].optional):
                problem = self._wait_one(client, name, spec, deadline)
                if problem is None:
                    continue
                if not spec.optional:
                    raise (TimeoutError if "not ready" in problem else RuntimeError)(problem)
                self._drop(name, problem)

    def _wait_one(self, client: httpx.Client, name: str, spec: ProcessSpec, deadline: float) -> str | None:
        """None once ready, else what went wrong."""
        url = f"http://127.0.0.1:{spec.port}{spec.ready_path}"
        while True:
            if self.processes[name].poll() is not None:
                return f"{name} exited with {self.processes[name].returncode}"
            try:
                if client.get(url).status_code == 200:
                    return None
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                return f"{name} not ready at {url}"
            time.sleep(0.1)

    def _drop(self, name: str, problem: str) -> None:
        process = self.processes.pop(name)
        self.specs.pop(name)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.dropped[name] = problem
        message = f"warning: optional process {problem}; running without it"
        logger.warning(message)
        print(message, file=sys.stderr, flush=True)

    def stop(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM every process (graceful shutdown), SIGKILL what outlives ``timeout``; exit codes."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes

    def first_exited(self) -> str | None:
        """The name of a process that has exited, if any."""
        return next((name for name, p in self.processes.items() if p.poll() is not None), None)


def _prefix_lines(name: str, process: subprocess.Popen[bytes]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(f"{name:>13} | {line.decode(errors='replace')}")
        sys.stdout.flush()


def register_shop(env: dict[str, str], shop_domain: str, *, fresh: bool = False) -> None:
    """``python -m restock_admin shops add`` (the stand-in for the OAuth install) with the access token the
    sandbox's GraphQL Admin API accepts (``RESTOCK_SANDBOX_SHOPIFY_ACCESS_TOKEN``, default ``demo-token``);
    ``fresh`` first removes the shop and its data, so the demo's restock is not inside the cooldown of an
    earlier run's."""
    admin = [sys.executable, "-m", "restock_admin", "shops"]
    full_env = {**os.environ, **env}
    if fresh:
        subprocess.run(
            [*admin, "remove", shop_domain, "--yes", "--actor", "make-run"], env=full_env, check=True
        )
    token = full_env.get("RESTOCK_SANDBOX_SHOPIFY_ACCESS_TOKEN") or Settings().sandbox_shopify_access_token
    subprocess.run([*admin, "add", shop_domain, "--access-token", token], env=full_env, check=True)
    database_url = full_env.get("RESTOCK_DATABASE_URL") or Settings().database_url
    # The demo restocks without the default 5-minute debounce, so ``make demo-restock`` answers at once.
    asyncio.run(set_shop_rules(database_url, shop_domain, updated_by="sandbox", debounce_seconds=0))


def encode_rules_patch(**fields: object) -> str:
    """A partial rules body (JSON) merged into the shop's row; every name must be a ``Rules`` field."""
    unknown = set(fields) - set(Rules.__struct_fields__)
    if unknown:
        raise ValueError(f"not rules: {sorted(unknown)}")
    return json.dumps(fields)


async def set_shop_rules(database_url: str, shop_domain: str, *, updated_by: str, **fields: object) -> None:
    """Merge ``fields`` into a sandbox shop's rules row. (The admin API's rule editor will own this; until
    then the sandbox, and the benchmarks that play a shop, write the row.)"""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO rules (tenant, body, version, updated_at, updated_by) "
            "SELECT id, $2::jsonb, 1, now(), $3 FROM tenants WHERE shop_domain = $1 "
            "ON CONFLICT (tenant) DO UPDATE SET body = rules.body || EXCLUDED.body, updated_at = now()",
            shop_domain,
            encode_rules_patch(**fields),
            updated_by,
        )
    finally:
        await connection.close()


def main() -> None:
    from restock_sandbox import demo

    ports = Ports()
    shop = os.environ.get("RESTOCK_SANDBOX_SHOP_DOMAIN", "demo-shop.myshopify.com")
    register_shop({}, shop, fresh=True)
    stack = Stack(env={}, ports=ports)
    stopping = threading.Event()
    # Both set explicitly: a shell may start us with SIGINT ignored (a background job), and Ctrl-C must
    # still stop everything gracefully.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        stack.start()
        stack.wait_ready()
        demo.seed(ports)
        print(demo.banner(ports, Settings().sandbox_shopify_access_token, stack.dropped), flush=True)
        while not stopping.wait(0.5):
            if (name := stack.first_exited()) is not None:
                print(f"{name} exited; stopping everything", file=sys.stderr)
                break
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", file=sys.stderr)
        stack.stop()


if __name__ == "__main__":
    main()
