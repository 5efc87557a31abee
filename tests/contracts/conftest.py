"""The stack the contract tests attack: every real process on free ports, this run's database, vhost and
Redis db, with three shops registered.

- ``SHOP``: the sandbox store's shop, seeded with the demo product (sold out) and one email subscriber; the
  poison tests restock it to show each consumer still works after its poison.
- ``FUZZ_SHOP``: signed signup fuzzing; an empty catalogue (any variant accepted) and double opt-in on both
  channels, so fuzzed signups go all the way to the subscription row and the confirmation's outbox row.
- ``WEBHOOK_SHOP``: signed webhook fuzzing (a fuzzed ``app/uninstalled`` may uninstall it; nothing else
  depends on it).

The signup rate limits are lifted: a fuzzer sends hundreds of signups from one IP, and a 429 would hide the
validation it is there to reach.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from restock_sandbox import demo
from restock_sandbox.stack import Ports, Stack, register_shop, set_shop_rules

SHOP = "contracts-shop.myshopify.com"
FUZZ_SHOP = "contracts-fuzz.myshopify.com"
WEBHOOK_SHOP = "contracts-webhooks.myshopify.com"

STACK_ENV = {
    "RESTOCK_SANDBOX_SHOP_DOMAIN": SHOP,
    "RESTOCK_SIGNUP_IP_LIMIT": "1000000",
    "RESTOCK_SIGNUP_CONTACT_LIMIT": "1000000",
}


@pytest.fixture(scope="package")
def contracts_env(test_env: dict[str, str]) -> dict[str, str]:
    return {**test_env, **STACK_ENV}


@pytest.fixture(scope="package")
def stack(contracts_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for shop in (SHOP, FUZZ_SHOP, WEBHOOK_SHOP):
        register_shop(contracts_env, shop)
    database_url = contracts_env["RESTOCK_DATABASE_URL"]
    asyncio.run(set_shop_rules(database_url, FUZZ_SHOP, updated_by="contracts", double_opt_in="email+sms"))
    log_dir = tmp_path_factory.mktemp("contracts-logs")
    running = Stack(env=contracts_env, ports=Ports.free(), log_dir=log_dir)
    try:
        running.start()
        running.wait_ready(timeout=120)
        assert not running.dropped, running.dropped  # the SMS sender is needed here: its queues are tested
        demo.seed(running.ports)
        yield running
    except Exception:
        dump_logs(log_dir)
        raise
    finally:
        codes = running.stop()
        # No crash: after everything thrown at them, every process still stops gracefully, by itself.
        assert all(code == 0 for code in codes.values()), (codes, dump_logs(log_dir))


def dump_logs(log_dir: Path) -> str:
    text = "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(log_dir.glob("*.log")))
    print(text)
    return "see logs above"


@pytest.fixture(scope="package")
def read_log(stack: Stack) -> Callable[[str], list[dict[str, Any]]]:
    """``read_log(process)``: the JSON log lines the process wrote so far."""
    return functools.partial(log_events, stack)


def log_events(stack: Stack, process: str) -> list[dict[str, Any]]:
    """The JSON log lines a process wrote so far (anything else on its output is skipped)."""
    assert stack.log_dir is not None
    events = []
    for line in (stack.log_dir / f"{process}.log").read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events
