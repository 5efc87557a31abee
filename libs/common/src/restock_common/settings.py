"""Settings, read from the environment only. The ``RESTOCK_*`` names are a contract (DESIGN.md).

Build one ``Settings()`` in a service's composition root and pass it down; never read the environment
inside a module. Defaults point at localhost for development; in production mode every secret must be
given explicitly and a missing one stops the service at start-up.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_SECRET = "restock-dev-secret"  # noqa: S105 - a well-known development value, refused in production


# How long the outbox relay waits for one publish's broker confirm (the floor of
# ``Settings.outbox_hold_limit_seconds`` follows from it).
OUTBOX_PUBLISH_TIMEOUT_SECONDS = 10.0


class Settings(BaseSettings):
    """Every knob of every service. Unknown ``RESTOCK_*`` variables are ignored."""

    model_config = SettingsConfigDict(env_prefix="RESTOCK_", extra="ignore", frozen=True)

    env: Literal["development", "production"] = "development"

    database_url: str = "postgresql://postgres@127.0.0.1:5432/restock"
    redis_url: str = "redis://127.0.0.1:6379/0"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    public_base_url: str = "http://127.0.0.1:8000"

    shopify_api_secret: SecretStr = SecretStr(DEVELOPMENT_SECRET)
    shopify_api_base_url: str = "http://127.0.0.1:8025"
    # The app's client id (not a secret): the ``aud`` of the session tokens Shopify's App Bridge gives the
    # embedded admin, which the admin API verifies with ``shopify_api_secret`` (ADR 29).
    shopify_api_key: str = Field(default="restock-dev-app", min_length=1)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_from: str = "Restock <alerts@restock.localhost>"

    # Signs the public links in messages (double opt-in confirmation, one-click unsubscribe); rotating it
    # invalidates every link already sent, so it is its own secret, not the Shopify one.
    link_secret: SecretStr = SecretStr(DEVELOPMENT_SECRET)

    twilio_account_sid: str = "AC00000000000000000000000000000000"
    twilio_auth_token: SecretStr = SecretStr(DEVELOPMENT_SECRET)
    twilio_base_url: str = "http://127.0.0.1:8025/twilio"
    twilio_from: str = "+15005550006"

    # Each service has its own default port (admin-api 8000, detector 8001, ...); see restock_common.service.
    http_port: int | None = None
    http_host: str = "127.0.0.1"

    # Broker and worker tuning.
    amqp_prefetch: int = Field(default=32, ge=1)
    # A half-open connection (the peer gone without a FIN) is noticed after about two missed heartbeats.
    amqp_heartbeat_seconds: int = Field(default=15, ge=1, le=600)
    job_batch_size: int = Field(default=100, ge=1, le=10_000)
    delivery_limit: int = Field(default=5, ge=1)
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
    # Outbox rows the relay has out awaiting their broker confirm at once (never two of one variant). One at
    # a time by default: the relay shares the webhooks' event loop, and a faster relay does its work inside a
    # burst of restocks instead of after it (ADR 22). Raise it to drain a long broker outage's backlog
    # faster: ~1,100 messages/s at 1, ~4,000 at 32 on the bench machine.
    outbox_publish_window: int = Field(default=1, ge=1, le=1000)
    # How long an outbox batch may hold its rows' locks: the relay starts no publish after half of it, and
    # PostgreSQL ends a session idle in the batch's transaction for all of it (a relay frozen mid-batch,
    # which would otherwise hold every relay's turn until its liveness probe restarts it; ADR 22). At least
    # twice a publish's timeout: half to start publishes, then one timeout for the last of them.
    outbox_hold_limit_seconds: float = Field(default=60.0, ge=2 * OUTBOX_PUBLISH_TIMEOUT_SECONDS, le=3600.0)
    lease_seconds: int = Field(default=120, ge=5)
    # Jobs one sender process works on at once (its SMTP pool holds as many connections).
    sender_concurrency: int = Field(default=8, ge=1, le=256)
    # Email sends of one sender process between their provider-call mark and their record, at most: SMTP
    # cannot be asked afterwards, so each is one job a crash of the process leaves indeterminate (ADR 21).
    # 1 serialises the SMTP transactions of a process (scale out with replicas); raise it for a distant
    # relay whose round trips dominate, accepting that many indeterminate jobs per crash.
    email_unconfirmed_sends: int = Field(default=1, ge=1, le=256)
    # The dispatcher: targets per freeze page (one Redis pipeline, one insert each), and the publish
    # sweeper, which publishes pending jobs still unpublished this long after their freeze committed.
    freeze_page_size: int = Field(default=1_000, ge=1, le=10_000)
    publish_sweep_after_seconds: float = Field(default=300.0, gt=0)
    publish_sweep_interval_seconds: float = Field(default=15.0, gt=0)
    # The sender's scheduler tick: due retries republished, expired leases reaped, unpublished jobs sent.
    retry_poll_seconds: float = Field(default=1.0, gt=0)
    # A retry moved back to pending whose publish was lost is published by the sender's scheduler once
    # untouched this long; replays go at once; never-published frozen jobs are the dispatcher's (ADR 10).
    republish_grace_seconds: float = Field(default=30.0, ge=0)
    # Dispatcher waves: how often the dispatcher looks for waves that are due (next_wave_at passed).
    wave_tick_seconds: float = Field(default=5.0, gt=0)

    # The sandbox (development and tests only): where its Shopify store delivers webhooks and forwards
    # App Proxy requests, and the shop it plays. Its own ports come from RESTOCK_SMTP_PORT and the port of
    # RESTOCK_SHOPIFY_API_BASE_URL, so services and sandbox agree by construction.
    sandbox_webhook_url: str = "http://127.0.0.1:8001/webhooks/shopify"
    sandbox_proxy_url: str = "http://127.0.0.1:8000/proxy"
    sandbox_shop_domain: str = "demo-shop.myshopify.com"
    # Where the sandbox's Twilio delivers a shopper's inbound SMS (STOP, YES), signed as Twilio signs it.
    sandbox_twilio_inbound_url: str = "http://127.0.0.1:8000/twilio/inbound"
    # Sandbox peers (ADR 0011): the access token the sandbox's GraphQL Admin API accepts for its shop (the
    # demo shop is registered with it), and how long a sandbox bulk operation runs before it completes.
    sandbox_shopify_access_token: str = "demo-token"  # noqa: S105 - a development peer's well-known token
    sandbox_bulk_seconds: float = Field(default=0.5, ge=0)

    # Signup (admin-api, ADR 17): abuse limits of the storefront signup (fixed windows in Redis; 429 with
    # Retry-After past them), the confirmation link's lifetime, the retention job's period, and how many
    # proxies append to X-Forwarded-For in front of us (Shopify's App Proxy is 1; add one per own ingress).
    signup_ip_limit: int = Field(default=30, ge=1)
    signup_ip_window_seconds: int = Field(default=600, ge=1)
    signup_contact_limit: int = Field(default=5, ge=1)
    signup_contact_window_seconds: int = Field(default=3_600, ge=1)
    confirm_link_max_age_seconds: int = Field(default=172_800, ge=60)
    retention_interval_seconds: float = Field(default=3_600.0, gt=0)
    forwarded_for_trusted_hops: int = Field(default=1, ge=0, le=8)

    # Delivery limits (sender, ADR 16). Per second, None: unlimited. Per mailbox provider the defaults of
    # restock_sender.limiter.DEFAULT_DOMAIN_LIMITS apply; this JSON mapping overrides or adds domains (null
    # removes one); other domains get email_domain_default_per_second. Twilio sender number MPS: long code
    # 1, toll-free 3, short code 100. A send whose limits free within limit_reservation_seconds reserves and
    # sleeps (holding no slot); one whose limit's backlog in this process is within limit_queue_seconds
    # waits in that limit's in-memory line; a later one is deferred to PostgreSQL, republished when due.
    email_global_per_second: float | None = Field(default=None, gt=0)
    sms_global_per_second: float | None = Field(default=None, gt=0)
    email_domain_limits: dict[str, float | None] = Field(default_factory=dict)
    email_domain_default_per_second: float | None = Field(default=None, gt=0)
    twilio_sender_mps: float = Field(default=1.0, gt=0)
    limit_reservation_seconds: float = Field(default=0.05, ge=0, le=1)
    limit_queue_seconds: float = Field(default=2.0, ge=0, le=60)
    # Every limit is spaced for (1 - limit_headroom) of its rate, and one process makes at most floor(rate)
    # provider calls on it in any (1 + limit_headroom) seconds (ADR 23): what absorbs the jitter between the
    # reserved instant and the message's arrival at the peer, so the peer's every one-second window stays
    # at or below the limit. 0.04: 40 ms of jitter absorbed, 96 % of a limit fillable at most (ADR 25: the
    # sandbox peer's own timestamps moved by more than 30 ms now and then once limits were filled to 97 %).
    limit_headroom: float = Field(default=0.04, ge=0, le=0.5)
    # A channel paused by a configuration error (SMTP 535, Twilio 20003) probes its provider this often
    # and resumes when the probe passes; an operator resumes it by updating its channel_pauses row.
    channel_probe_seconds: float = Field(default=30.0, gt=0)

    # Detector: the reconciliation sync. How often its loop looks for due shops (a requested sync starts
    # within this), and the catalogue size (items) from which a shop is read by a bulk operation.
    sync_poll_seconds: float = Field(default=2.0, gt=0)
    sync_bulk_threshold: int = Field(default=10_000, ge=1)

    # Named kill points for the fault suite; unset in production. See restock_common.faults.
    fault_point: str | None = None

    @model_validator(mode="after")
    def _secrets_given_in_production(self) -> Settings:
        if self.env == "production":
            for name in ("shopify_api_secret", "twilio_auth_token", "link_secret"):
                if getattr(self, name).get_secret_value() == DEVELOPMENT_SECRET:
                    raise ValueError(f"RESTOCK_{name.upper()} must be set in production")
        return self
