"""End to end: the real processes, started as subprocesses, driven through the sandbox store.

A shopper subscribes through the (signed) App Proxy, the store restocks the variant, and exactly one
email reaches the sandbox SMTP server, to that shopper, about that variant, with the deterministic
Message-ID of its notification key; the job is ``sent`` with one log row.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from restock_common.db.tables import NotificationJob, NotificationLog, Tenant
from restock_sandbox import demo
from restock_sandbox.stack import Ports, Stack, register_shop

pytestmark = pytest.mark.e2e

SHOP = "e2e-shop.myshopify.com"


@pytest.fixture(scope="module")
def stack(test_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ports = Ports.free()
    # Every test of the run shares one Redis db and signs up from 127.0.0.1: the per-IP signup limit (tested
    # on its own in the admin-api's tests) would refuse this stack's demo signups after earlier tests'.
    env = {**test_env, "RESTOCK_SANDBOX_SHOP_DOMAIN": SHOP, "RESTOCK_SIGNUP_IP_LIMIT": "1000000"}
    register_shop(env, SHOP)
    log_dir = tmp_path_factory.mktemp("e2e-logs")
    running = Stack(env=env, ports=ports, log_dir=log_dir)
    try:
        running.start()
        running.wait_ready(timeout=90)
        yield running
    except Exception:
        _dump_logs(log_dir)
        raise
    finally:
        codes = running.stop()
        # Graceful shutdown: every process exits on SIGTERM by itself, not by SIGKILL.
        assert all(code == 0 for code in codes.values()), (codes, _dump_logs(log_dir))


def _dump_logs(log_dir: Path) -> str:
    text = "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(log_dir.glob("*.log")))
    print(text)
    return "see logs above"


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _restock_and_collect(ports: Ports, shopper: str) -> list[dict[str, object]]:
    demo.seed(ports, subscriber=shopper)
    with httpx.Client(timeout=10.0) as client:
        assert demo.inbox(client, ports, shopper) == []
        demo.set_level(client, ports, 5)
        _wait_for(lambda: demo.inbox(client, ports, shopper), 30, "the alert email")
        # Nothing else may follow: a second copy would be a duplicate send.
        time.sleep(2.0)
        return demo.inbox(client, ports, shopper)


async def test_one_restock_sends_exactly_one_email(stack: Stack, engine: object) -> None:
    # An address no other test uses: the stack's sender also sends what other tests of the run left pending
    # in the shared database (their shoppers' mail is theirs, not a duplicate of this restock's).
    shopper = f"ada.{uuid.uuid4().hex[:8]}@example.com"
    messages = await asyncio.to_thread(_restock_and_collect, stack.ports, shopper)

    assert len(messages) == 1, messages
    message = messages[0]
    assert message["rcpt_tos"] == [shopper]
    body = f"{message.get('subject')} {message.get('text')} {message.get('html')}"
    assert "Demo Hoodie" in body
    assert str(demo.VARIANT_ID) in body

    # The run's database is shared with the other tests: look at this shop's rows only.
    tenant = await Tenant.select(Tenant.id).where(Tenant.shop_domain == SHOP).first()
    assert tenant is not None
    jobs = await NotificationJob.select().where(NotificationJob.tenant == tenant["id"]).run()
    assert len(jobs) == 1
    job = jobs[0]
    assert job["state"] == "sent"
    expected_id = hashlib.sha256(job["notification_key"].encode()).hexdigest()[:32]
    assert expected_id in str(message["message_id"])
    logs = await NotificationLog.select().where(NotificationLog.job == job["id"]).run()
    assert [log["outcome"] for log in logs] == ["sent"]
