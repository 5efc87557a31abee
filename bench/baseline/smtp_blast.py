"""The baseline of ``bench/delivery.py`` (a): a raw aiosmtplib blast, no database, no broker, no limits.

``CONNECTIONS`` persistent SMTP sessions send ``MESSAGES`` messages (the same MIME shape as an alert: text
plus HTML) to one peer as fast as it accepts them. Prints one JSON line: ``{"sent": n, "seconds": s}``.
Usage: ``python bench/baseline/smtp_blast.py HOST PORT CONNECTIONS MESSAGES``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from email.message import EmailMessage

import aiosmtplib


def message(index: int) -> EmailMessage:
    mime = EmailMessage()
    mime["From"] = "Restock <alerts@restock.localhost>"
    mime["To"] = f"blast{index}@blast{index % 20}.test"
    mime["Subject"] = "Red Scarf is back in stock"
    mime["Message-ID"] = f"<blast-{index}@restock.localhost>"
    mime.set_content("Red Scarf is back in stock at bench-shop.myshopify.com.\n")
    mime.add_alternative(
        "<p><b>Red Scarf</b> is back in stock at bench-shop.myshopify.com.</p>", subtype="html"
    )
    return mime


async def session(host: str, port: int, indexes: range) -> int:
    client = aiosmtplib.SMTP(hostname=host, port=port, timeout=30)
    await client.connect()
    try:
        for index in indexes:
            mime = message(index)
            await client.send_message(mime, sender="alerts@restock.localhost", recipients=[str(mime["To"])])
    finally:
        await client.quit()
    return len(indexes)


async def blast(host: str, port: int, connections: int, messages: int) -> dict[str, float]:
    started = time.perf_counter()
    counts = await asyncio.gather(
        *(session(host, port, range(c, messages, connections)) for c in range(connections))
    )
    return {"sent": sum(counts), "seconds": time.perf_counter() - started}


if __name__ == "__main__":
    host, port, connections, messages = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(blast(host, port, connections, messages))))
