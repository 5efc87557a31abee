"""The store's webhook fault table: which webhooks to drop, duplicate, delay or reorder. Pure, in memory.

Rules:
- A rule matches a webhook by its exact topic (``inventory_levels/update``, case-insensitive) or every
  topic (``*``).
- Its mode says what happens to a matching webhook instead of one plain send:
  ``drop``      never sent; the delivery log records it as dropped.
  ``duplicate`` sent twice, the same webhook both times (same body, same X-Shopify-Webhook-Id and
                Event-Id), as Shopify's retries after a lost answer are.
  ``delay``     held ``delay_ms`` then sent in the background; the change that caused it is answered at
                once as held.
  ``reorder``   held until the next webhook of the same topic has been sent, then sent: the receiver
                sees the newer one first.
- The first matching rule (in the order added) applies and uses up one of its ``times``; a rule with
  ``times`` None applies to every webhook until the table is cleared. Exhausted rules disappear.
- Clearing the table does not release webhooks already held; a flush does (``WebhookDeliverer.flush``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["drop", "duplicate", "delay", "reorder"]
MODES: tuple[Mode, ...] = ("drop", "duplicate", "delay", "reorder")


@dataclass
class WebhookFault:
    """Apply ``mode`` to webhooks of ``topic`` (or ``*``), ``times`` times (None: until cleared)."""

    topic: str
    mode: Mode
    times: int | None = 1
    delay_ms: int = 1_000  # only the ``delay`` mode reads it

    def matches(self, topic: str) -> bool:
        """Whether this rule applies to a webhook of ``topic``."""
        pattern = self.topic.strip().lower()
        return pattern == "*" or pattern == topic.strip().lower()


@dataclass
class WebhookFaultTable:
    """The rules, consulted in the order they were added."""

    rules: list[WebhookFault] = field(default_factory=list)

    def add(self, rule: WebhookFault) -> None:
        """Append a rule."""
        self.rules.append(rule)

    def clear(self) -> None:
        """Deliver every webhook plainly again."""
        self.rules.clear()

    def take(self, topic: str) -> WebhookFault | None:
        """The rule that applies to the next webhook of ``topic``, if any, using up one of its times."""
        for rule in self.rules:
            if rule.matches(topic):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self.rules.remove(rule)
                return rule
        return None
