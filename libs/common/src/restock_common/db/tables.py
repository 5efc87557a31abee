"""The data model of DESIGN.md, defined once.

Every row carries ``tenant`` (the shop). PostgreSQL is the truth: Redis and RabbitMQ may lose state and
every decision can be re-derived from these tables. Personal data (email, phone) lives only in
``subscriptions``; everything else refers to a subscription by id or to a contact by ``contact_hash``.
"""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    UUID,
    BigInt,
    BigSerial,
    Boolean,
    ForeignKey,
    Integer,
    SmallInt,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.constraints import Unique
from piccolo.table import Table


class Tenant(Table, tablename="tenants"):
    """A Shopify shop that installed the app."""

    id = BigSerial(primary_key=True)
    shop_domain = Varchar(length=255, unique=True)
    access_token = Text(default="")
    timezone = Varchar(length=64, default="UTC")
    installed_at = Timestamptz(default=TimestamptzNow())
    uninstalled_at = Timestamptz(null=True, default=None)
    redacted_at = Timestamptz(null=True, default=None)
    # The reconciliation sync (detector): its schedule, an on-demand request, and how the last run went.
    sync_requested_at = Timestamptz(null=True, default=None)
    last_sync_started_at = Timestamptz(null=True, default=None)
    last_sync_finished_at = Timestamptz(null=True, default=None)
    last_sync_error = Text(null=True, default=None)


class Subscription(Table, tablename="subscriptions"):
    """A shopper's request to be told when one variant is back, on one channel."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant, index=True)
    variant_id = BigInt()
    product_id = BigInt(null=True, default=None)
    channel = Varchar(length=8)  # email | sms
    email = Varchar(length=320, null=True, default=None)
    phone = Varchar(length=20, null=True, default=None)  # E.164
    contact_hash = Varchar(length=64)  # sha256 of the normalised contact: lookups without personal data
    locale = Varchar(length=16, default="en")
    quantity = Integer(default=1)
    # pending (awaiting double opt-in) | confirmed | unsubscribed; see restock_common.consent
    state = Varchar(length=16, default="pending")
    source = Varchar(length=16, default="storefront")  # storefront | import | admin
    consent_text_version = Varchar(length=32, default="v1")
    ip_hash = Varchar(length=64, null=True, default=None)
    subscribed_at = Timestamptz(default=TimestamptzNow())
    confirmed_at = Timestamptz(null=True, default=None)
    unsubscribed_at = Timestamptz(null=True, default=None)
    notified_count = Integer(default=0)
    last_notified_at = Timestamptz(null=True, default=None)
    fulfilled_at = Timestamptz(null=True, default=None)
    redacted_at = Timestamptz(null=True, default=None)

    one_per_contact = Unique(["tenant", "variant_id", "channel", "contact_hash"])


class ConsentEvent(Table, tablename="consent_events"):
    """Append-only evidence of every consent change: rows, never overwrites."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant, index=True)
    subscription = ForeignKey(references=Subscription, index=True)
    # subscribed | confirmed | unsubscribed | resubscribed | redacted | expired | confirmation-sent
    kind = Varchar(length=24)
    # storefront | email-link | list-unsubscribe | sms-keyword | admin | retention | provider | sender
    source = Varchar(length=24)
    consent_text_version = Varchar(length=32, null=True, default=None)
    ip_hash = Varchar(length=64, null=True, default=None)
    detail = JSONB(default={})
    occurred_at = Timestamptz(default=TimestamptzNow())


class InventoryItem(Table, tablename="inventory_items"):
    """Shopify inventory item -> variant. Webhooks name items; shoppers subscribe to variants."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant)
    inventory_item_id = BigInt()
    variant_id = BigInt(index=True)
    product_id = BigInt(null=True, default=None)
    sku = Varchar(length=255, null=True, default=None)
    title = Text(null=True, default=None)
    updated_at = Timestamptz(default=TimestamptzNow())

    one_per_item = Unique(["tenant", "inventory_item_id"])


class StockSnapshot(Table, tablename="stock_snapshots"):
    """The last observed level of one inventory item at one location."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant)
    inventory_item_id = BigInt()
    location_id = BigInt()
    available = Integer()
    # Shopify's own updated_at: an observation older than this one is stale and ignored.
    shopify_updated_at = Timestamptz()
    observed_at = Timestamptz(default=TimestamptzNow())
    source = Varchar(length=16, default="webhook")  # webhook | sync

    one_per_location = Unique(["tenant", "inventory_item_id", "location_id"])


class VariantState(Table, tablename="variant_states"):
    """The detector's memory per variant: availability, armed debounce, last restock (cooldown)."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant)
    variant_id = BigInt()
    available = Integer(default=0)
    armed_at = Timestamptz(null=True, default=None)
    last_restock_at = Timestamptz(null=True, default=None)
    updated_at = Timestamptz(default=TimestamptzNow())
    # Bumped by a trigger on every update of the row: the detector's two-trip webhook writes only if it is
    # still the version it read (ADR 27).
    version = BigInt(default=0)

    one_per_variant = Unique(["tenant", "variant_id"])


class RestockEvent(Table, tablename="restock_events"):
    """A detected 0 -> 1+ transition of a variant: what the dispatcher freezes targets for."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant, index=True)
    variant_id = BigInt()
    product_id = BigInt(null=True, default=None)
    available = Integer()
    restock_window = BigInt()
    source = Varchar(length=16)  # webhook | sync
    detected_at = Timestamptz(default=TimestamptzNow())
    frozen_at = Timestamptz(null=True, default=None)
    target_count = Integer(null=True, default=None)
    traceparent = Varchar(length=64, null=True, default=None)
    # The publish cursor of the jobs its freeze made pending (ADR 24): set when every one's batch was
    # confirmed; until then the last confirmed job in FIFO (priority_at, id) order.
    published_at = Timestamptz(null=True, default=None)
    published_through_at = Timestamptz(null=True, default=None)
    published_through_id = BigInt(null=True, default=None)


class Template(Table, tablename="templates"):
    """A message template version. Immutable once used: an edit is a new version."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant, index=True)
    name = Varchar(length=64)
    channel = Varchar(length=8)
    locale = Varchar(length=16, default="en")
    version = Integer()
    subject = Text(default="")
    body_text = Text()
    body_html = Text(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    created_by = Varchar(length=255, default="system")
    first_used_at = Timestamptz(null=True, default=None)

    one_per_version = Unique(["tenant", "name", "channel", "locale", "version"])


class NotificationJob(Table, tablename="notification_jobs"):
    """One notification to one subscription for one restock: the state machine of DESIGN.md."""

    id = BigSerial(primary_key=True)
    # tenants.id, restock_events.id and subscriptions.id without foreign keys: their checks were over half
    # of a freeze's cost per job. Events and subscriptions go only with their shop, and a shop's deletion
    # deletes its jobs (trigger ``notification_jobs_follow_tenant``), as the tenant key's cascade did (ADR 24)
    tenant = BigInt()
    restock_event = BigInt()
    subscription = BigInt(index=True)
    variant_id = BigInt()
    channel = Varchar(length=8)
    # variant_id:subscription_id:restock_window, see restock_common.keys
    notification_key = Varchar(length=96, unique=True)
    state = Varchar(length=24, default="pending")
    attempt = Integer(default=0)
    next_attempt_at = Timestamptz(null=True, default=None)
    lease_until = Timestamptz(null=True, default=None)
    # Set (committed) right before the provider is called, cleared by each claim: a lease that expires
    # without it proves the attempt never reached the provider, so the job is simply sent again (ADR 21).
    provider_called_at = Timestamptz(null=True, default=None)
    priority_at = Timestamptz()  # the subscription time: FIFO fairness
    template = ForeignKey(references=Template, null=True, default=None)
    template_version = Integer(null=True, default=None)
    wave = SmallInt(null=True, default=None)
    decision = Varchar(length=32, null=True, default=None)  # why it waits, is suppressed, or was skipped
    last_error_kind = Varchar(length=16, null=True, default=None)
    last_error = Text(null=True, default=None)
    traceparent = Varchar(length=64, null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
    enqueued_at = Timestamptz(null=True, default=None)
    sent_at = Timestamptz(null=True, default=None)


class NotificationLog(Table, tablename="notification_logs"):
    """One row per delivery attempt: what was sent, with which template, and what the provider said."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant)
    job = ForeignKey(references=NotificationJob, index=True)
    attempt = Integer()
    channel = Varchar(length=8)
    outcome = Varchar(length=24)
    provider = Varchar(length=16)
    provider_message_id = Varchar(length=255, null=True, default=None)
    provider_response = Text(null=True, default=None)
    error_kind = Varchar(length=16, null=True, default=None)  # temporary | permanent | configuration
    error_code = Varchar(length=32, null=True, default=None)
    error_detail = Text(null=True, default=None)
    template = ForeignKey(references=Template, null=True, default=None)
    template_name = Varchar(length=64, null=True, default=None)
    template_version = Integer(null=True, default=None)
    variables = JSONB(default={})
    segments = SmallInt(null=True, default=None)
    trace_id = Varchar(length=32, null=True, default=None)
    started_at = Timestamptz(default=TimestamptzNow())
    finished_at = Timestamptz(null=True, default=None)
    delivery_status = Varchar(length=24, null=True, default=None)  # provider receipts (Twilio callbacks)
    opened_at = Timestamptz(null=True, default=None)
    clicked_at = Timestamptz(null=True, default=None)


class Rule(Table, tablename="rules"):
    """A shop's rules (restock_common.rules.Rules as JSON): one row per shop, versioned by edits."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant, unique=True)
    body = JSONB(default={})
    version = Integer(default=1)
    updated_at = Timestamptz(default=TimestamptzNow())
    updated_by = Varchar(length=255, default="system")


class AuditLog(Table, tablename="audit_log"):
    """Who did what to which object, for every manual action in the admin UI or CLI."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant, index=True, null=True, default=None)
    actor = Varchar(length=255)
    action = Varchar(length=64)
    target_type = Varchar(length=32)
    target_ids = JSONB(default=[])
    detail = JSONB(default={})
    trace_id = Varchar(length=32, null=True, default=None)
    occurred_at = Timestamptz(default=TimestamptzNow())


class WebhookReceipt(Table, tablename="webhook_receipts"):
    """A Shopify delivery already processed: a repeat of the same webhook id, or of the same shop event
    under a new webhook id, is answered, not re-run. Unique per (``shop_domain``, ``event_id``) where the
    event id is known: a partial index Piccolo cannot declare, made by migration 2026-12-07T18:50."""

    id = BigSerial(primary_key=True)
    webhook_id = Varchar(length=128, unique=True)
    event_id = Varchar(length=128, null=True, default=None, index=True)
    shop_domain = Varchar(length=255)
    topic = Varchar(length=64)
    triggered_at = Timestamptz(null=True, default=None)
    received_at = Timestamptz(default=TimestamptzNow())


class Outbox(Table, tablename="outbox"):
    """Events committed with the change that caused them; published (with confirms) by a relay."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant, null=True, default=None)
    routing_key = Varchar(length=64)
    message_id = UUID()
    ordering_key = Varchar(length=64, null=True, default=None)  # e.g. tenant:variant, kept in order
    payload = Text()
    traceparent = Varchar(length=64, null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    published_at = Timestamptz(null=True, default=None)
    publish_attempts = Integer(default=0)


class WavePlan(Table, tablename="wave_plans"):
    """The dispatcher's inventory-aware waves for one variant: which wave is out, when the next may go,
    and the last availability it planned with. Written only by the wave planner's store."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant)
    variant_id = BigInt()
    restock_event = ForeignKey(references=RestockEvent, null=True, default=None)
    wave = SmallInt(default=0)
    status = Varchar(length=16, default="idle")  # idle | active | sold-out
    available = Integer(default=0)
    wave_started_at = Timestamptz(null=True, default=None)
    next_wave_at = Timestamptz(null=True, default=None)
    updated_at = Timestamptz(default=TimestamptzNow())

    one_wave_plan_per_variant = Unique(["tenant", "variant_id"])


class ConsumedToken(Table, tablename="consumed_tokens"):
    """A single-use public link already used (by ``restock_common.links.token_id``): a reused confirmation
    link gets a clear page instead of acting twice."""

    id = BigSerial(primary_key=True)
    token_id = Varchar(length=64, unique=True)
    purpose = Varchar(length=16)
    subscription_id = BigInt(null=True, default=None)
    used_at = Timestamptz(default=TimestamptzNow())


class ChannelPause(Table, tablename="channel_pauses"):
    """A channel paused because our own configuration is wrong (SMTP 535, Twilio 20003): jobs stay pending
    until an operator (or the sender's health probe) resumes it. One row per channel."""

    id = BigSerial(primary_key=True)
    channel = Varchar(length=8, unique=True)
    paused = Boolean(default=False)
    reason = Text(null=True, default=None)
    error_code = Varchar(length=32, null=True, default=None)
    paused_at = Timestamptz(null=True, default=None)
    resumed_at = Timestamptz(null=True, default=None)
    updated_at = Timestamptz(default=TimestamptzNow())


class ProductView(Table, tablename="product_views"):
    """Storefront views per variant per day, for the signup-rate KPI. No personal data."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant)
    variant_id = BigInt()
    day = Varchar(length=10)  # ISO date, UTC
    views = BigInt(default=0)

    one_per_day = Unique(["tenant", "variant_id", "day"])


class OrderAttribution(Table, tablename="order_attributions"):
    """An order that contained a notified variant: the revenue the alerts brought."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant, index=True)
    order_id = BigInt()
    variant_id = BigInt()
    subscription = ForeignKey(references=Subscription, null=True, default=None)
    job = ForeignKey(references=NotificationJob, null=True, default=None)
    amount_cents = BigInt(default=0)
    currency = Varchar(length=3, default="USD")
    ordered_at = Timestamptz()
    attributed = Boolean(default=False)

    one_per_line = Unique(["tenant", "order_id", "variant_id"])


class StaffPermission(Table, tablename="staff_permissions"):
    """A shop's staff member allowed into the admin API, with one role (``restock_admin.staff.roles``):
    ``viewer`` or ``operator``. ``user_id`` is the ``sub`` of the Shopify session token (a staff user id,
    never an email). No row: no access to that shop (ADR 29)."""

    id = BigSerial(primary_key=True)
    tenant = ForeignKey(references=Tenant)  # ON DELETE CASCADE: a removed shop takes its grants
    user_id = Varchar(length=64)
    role = Varchar(length=16)  # viewer | operator (checked by the table's constraint too)
    created_at = Timestamptz(default=TimestamptzNow())
    created_by = Varchar(length=255, default="system")

    one_per_user = Unique(["tenant", "user_id"])


ALL_TABLES: list[type[Table]] = [
    Tenant,
    Subscription,
    ConsentEvent,
    InventoryItem,
    StockSnapshot,
    VariantState,
    RestockEvent,
    Template,
    NotificationJob,
    NotificationLog,
    Rule,
    AuditLog,
    WebhookReceipt,
    Outbox,
    ProductView,
    OrderAttribution,
    WavePlan,
    ConsumedToken,
    ChannelPause,
    StaffPermission,
]
