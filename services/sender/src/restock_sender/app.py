"""The sender's composition root: settings -> engine, broker, SMTP pool -> handlers -> consumer, scheduler.

The only module that names concrete adapters. ``create_app`` builds the Litestar app (health routes, the
consumer of ``jobs.<channel>`` and the retry/reaper scheduler started and stopped in the lifespan) so tests
run what production runs.
"""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import cast

from litestar import Litestar
from piccolo.engine.postgres import PostgresEngine
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from restock_common import topology
from restock_common.broker import Broker
from restock_common.db.engine import close_engine, open_engine
from restock_common.faults import FaultPoints
from restock_common.links import LinkSigner
from restock_common.messages import Channel, ConfirmationRequested, JobBatch
from restock_common.service import Connections, health_routes, log_server_error, run
from restock_common.settings import Settings
from restock_common.telemetry import http_telemetry_plugins
from restock_sender.adapters.admission_store import PiccoloAdmissionStore
from restock_sender.adapters.confirmation_store import PiccoloConfirmationStore, RedisSendGuard
from restock_sender.adapters.job_store import PiccoloJobStore
from restock_sender.adapters.lease_store import PiccoloLeaseStore
from restock_sender.adapters.pause_store import PiccoloPauseStore
from restock_sender.adapters.provider_probes import SmtpProbe, TwilioProbe
from restock_sender.adapters.publisher import BrokerJobPublisher
from restock_sender.adapters.redis_limiter import RedisRateLimiter
from restock_sender.adapters.schedule_store import PiccoloScheduleStore
from restock_sender.adapters.template_store import PiccoloTemplateStore
from restock_sender.admission import Admission
from restock_sender.confirmations import ConfirmationHandler
from restock_sender.handler import BatchHandler, JobHandler
from restock_sender.lease import SmsLeaseReaper
from restock_sender.limiter import LimitConfig
from restock_sender.metrics import SenderMetrics, metrics_route
from restock_sender.outbound import EmailOutbound, Outbound, PublicLinks, SmsOutbound
from restock_sender.pause import ChannelMonitor, ChannelPause, ConsumerSwitch
from restock_sender.ports import DeliveryMetrics, ProviderProbe
from restock_sender.providers.smtp import SmtpProvider
from restock_sender.providers.twilio import TwilioProvider
from restock_sender.scheduler import Scheduler
from restock_sender.templates import BUILTIN_ALERTS, JinjaRenderer

CHANNEL: Channel = "email"
SERVICE = f"sender-{CHANNEL}"


def smtp_provider(settings: Settings) -> SmtpProvider:
    """The SMTP pool, one session per concurrent job."""
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return SmtpProvider(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.smtp_from,
        username=settings.smtp_username,
        password=password,
        tls=settings.smtp_tls,
        pool_size=settings.sender_concurrency,
    )


def twilio_provider(settings: Settings) -> TwilioProvider:
    """The official Twilio client pointed at ``RESTOCK_TWILIO_BASE_URL``."""
    return TwilioProvider(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
        base_url=settings.twilio_base_url,
        sender=settings.twilio_from,
    )


def public_links(settings: Settings) -> PublicLinks:
    """The signed public URLs messages carry (unsubscribe, confirmation, Twilio status callbacks)."""
    return PublicLinks(LinkSigner(settings.link_secret.get_secret_value()), settings.public_base_url)


def build_batch_handler(
    settings: Settings,
    engine: PostgresEngine,
    provider: SmtpProvider | TwilioProvider,
    faults: FaultPoints,
    *,
    admission: Admission | None = None,
    metrics: DeliveryMetrics | None = None,
    pause: ChannelPause | None = None,
) -> BatchHandler:
    """The consumer handler of the provider's channel with its real adapters (``admission``: limits,
    windows and pause checked before each claim; without it every job is claimed at once)."""
    links = public_links(settings)
    channel: Channel = "sms" if isinstance(provider, TwilioProvider) else "email"
    outbound: Outbound = (
        SmsOutbound(provider, links) if isinstance(provider, TwilioProvider) else EmailOutbound(provider)
    )
    jobs = JobHandler(
        store=PiccoloJobStore(engine),
        provider=provider,
        renderer=JinjaRenderer(),
        template=BUILTIN_ALERTS[channel],
        faults=faults,
        clock=lambda: datetime.now(UTC),
        rng=random.SystemRandom().random,
        lease_seconds=settings.lease_seconds,
        outbound=outbound,
        templates=PiccoloTemplateStore(engine),
        links=links if channel == "email" else None,  # SMS opts out by STOP, not by a link
        metrics=metrics,
        pause=pause,
        # SMS needs no bound: the lease reaper asks Twilio what an unrecorded send did (ADR 15).
        unconfirmed_sends=settings.email_unconfirmed_sends if channel == "email" else None,
    )
    return BatchHandler(jobs, channel, settings.sender_concurrency, faults, admission=admission)


def limit_config(settings: Settings) -> LimitConfig:
    """The process-wide rate limits (ADR 16)."""
    return LimitConfig(
        global_per_second={"email": settings.email_global_per_second, "sms": settings.sms_global_per_second},
        domain_limits=settings.email_domain_limits,
        domain_default_per_second=settings.email_domain_default_per_second,
        sender_mps=settings.twilio_sender_mps,
        sender_number=settings.twilio_from,
        headroom=settings.limit_headroom,
    )


def build_admission(
    settings: Settings, engine: PostgresEngine, redis: Redis, pause: ChannelPause, metrics: DeliveryMetrics
) -> Admission:
    """The pre-claim checks with their real adapters: PostgreSQL reads and deferrals, the Redis limiter."""
    return Admission(
        PiccoloAdmissionStore(engine),
        RedisRateLimiter(redis),
        limit_config(settings),
        pause,
        metrics,
        lambda: datetime.now(UTC),
        reservation_seconds=settings.limit_reservation_seconds,
        queue_seconds=settings.limit_queue_seconds,
        pause_retry_seconds=settings.channel_probe_seconds,
    )


def provider_probe(settings: Settings, channel: Channel) -> ProviderProbe:
    """What the channel monitor tries while the channel is paused."""
    if channel == "sms":
        return TwilioProbe(
            base_url=settings.twilio_base_url,
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
        )
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return SmtpProbe(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.smtp_from,
        username=settings.smtp_username,
        password=password,
        tls=settings.smtp_tls,
    )


def build_confirmation_handler(
    settings: Settings,
    provider: SmtpProvider | TwilioProvider,
    redis: Redis,
    pause: ChannelPause | None = None,
) -> ConfirmationHandler:
    """The double opt-in consumer of the provider's channel (ADR 15), held while the channel is paused."""
    sms = provider if isinstance(provider, TwilioProvider) else None
    return ConfirmationHandler(
        "sms" if sms else "email",
        PiccoloConfirmationStore(),
        RedisSendGuard(redis),
        JinjaRenderer(),
        public_links(settings),
        email=None if sms else cast(SmtpProvider, provider),
        sms_provider=sms,
        pause=pause,
    )


def build_lease_reaper(engine: PostgresEngine, sms: TwilioProvider) -> SmsLeaseReaper:
    """The SMS lease reaper (ADR 15): asks Twilio's message list about jobs a dead sender left."""
    return SmsLeaseReaper(
        PiccoloLeaseStore(engine), sms, JinjaRenderer(), PiccoloTemplateStore(engine), BUILTIN_ALERTS["sms"]
    )


def build_scheduler(
    settings: Settings,
    engine: PostgresEngine,
    broker: Broker,
    paused: Callable[[], bool] | None = None,
    *,
    channel: Channel = CHANNEL,
    sms: TwilioProvider | None = None,
) -> Scheduler:
    """Retries, unpublished and deferred jobs and the lease reaper of this channel, with their real adapters
    (``paused``: whether the channel is paused, when publishing must wait; ``sms``: the Twilio client the
    SMS lease reaper asks)."""
    return Scheduler(
        PiccoloScheduleStore(engine),
        BrokerJobPublisher(broker),
        channel,
        batch_size=settings.job_batch_size,
        grace_seconds=settings.republish_grace_seconds,
        interval=settings.retry_poll_seconds,
        paused=paused,
        lease_reaper=build_lease_reaper(engine, sms) if channel == "sms" and sms is not None else None,
    )


def create_app(
    settings: Settings, *, faults: FaultPoints | None = None, channel: Channel = CHANNEL
) -> Litestar:
    """The sender process of one channel as a Litestar app."""
    faults = faults or FaultPoints(settings.fault_point)
    runtime = Connections()
    registry = CollectorRegistry()
    metrics = SenderMetrics(registry)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # The sender keeps no session state on a connection: no reset round trip after each query.
            engine = await open_engine(
                settings, pool_size=settings.sender_concurrency + 2, stateless_sessions=True
            )
            stack.push_async_callback(close_engine, engine)
            broker = await Broker.connect(
                settings.amqp_url,
                delivery_limit=settings.delivery_limit,
                heartbeat=settings.amqp_heartbeat_seconds,
            )
            stack.push_async_callback(broker.close)
            provider = twilio_provider(settings) if channel == "sms" else smtp_provider(settings)
            stack.push_async_callback(provider.close)
            runtime.engine, runtime.broker = engine, broker
            redis = Redis.from_url(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            pause = ChannelPause(channel, PiccoloPauseStore(engine))
            admission = build_admission(settings, engine, redis, pause, metrics)
            handler = build_batch_handler(
                settings, engine, provider, faults, admission=admission, metrics=metrics, pause=pause
            )
            queue = topology.sender_queue(channel, settings.delivery_limit)
            consumer = ConsumerSwitch(
                lambda: broker.consume(queue, JobBatch, handler, prefetch=settings.amqp_prefetch)
            )
            # Last in, first out: stop consuming and finish in-flight jobs before SMTP, broker and pool close;
            # first of all, start no more of the prefetched jobs (they are requeued, not worked through).
            stack.push_async_callback(consumer.stop)
            stack.callback(handler.stop_starting)
            confirmations = await broker.consume(
                topology.sender_confirm_queue(channel, settings.delivery_limit),
                ConfirmationRequested,
                build_confirmation_handler(settings, provider, redis, pause),
                prefetch=settings.amqp_prefetch,
            )
            stack.push_async_callback(confirmations.stop)
            monitor = ChannelMonitor(
                pause,
                provider_probe(settings, channel),
                consumer,
                interval=settings.channel_probe_seconds,
                backlog=metrics.operator_backlog,
            )
            await monitor.tick()  # starts the consumer, unless the channel is paused (ADR 16)
            monitor.start()
            stack.push_async_callback(monitor.stop)
            sms = provider if isinstance(provider, TwilioProvider) else None
            scheduler = build_scheduler(
                settings, engine, broker, paused=lambda: pause.paused, channel=channel, sms=sms
            )
            scheduler.start()
            stack.push_async_callback(scheduler.stop)
            yield

    # logging_config=None keeps telemetry.setup_logging's JSON lines: Litestar's default replaces them.
    return Litestar(
        route_handlers=[*health_routes(runtime.checks()), metrics_route(registry)],
        lifespan=[lifespan],
        logging_config=None,
        after_exception=[log_server_error],
        plugins=http_telemetry_plugins(),
    )


def main(channel: Channel = CHANNEL) -> None:
    """Run the sender of ``channel`` until SIGTERM."""
    run(f"sender-{channel}", functools.partial(create_app, channel=channel))
