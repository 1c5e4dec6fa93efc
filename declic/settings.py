"""The one place configuration is read: ``DECLIC_*`` environment variables.

Build a :class:`Settings` once at start-up and pass it down. AWS credentials, region and
endpoints are boto3's own standard variables (``AWS_REGION``, ``AWS_ENDPOINT_URL_SESV2``, ...)
and are deliberately not duplicated here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every knob Déclic reads, with the defaults a laptop needs."""

    model_config = SettingsConfigDict(env_prefix="DECLIC_", extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/declic"
    broker_url: str = "redis://127.0.0.1:6379/0"
    # Rate limits and dedupe keys; the broker's Redis when not set.
    redis_url: str | None = None

    flows_dir: Path = REPO_ROOT / "flows" / "catalogue"
    templates_dir: Path = REPO_ROOT / "templates"

    ses_configuration_set: str | None = "declic"
    ses_queue_url: str | None = None
    # Recipients per second for the whole account, shared by every worker through Redis.
    # Default: the account's MaxSendRate from SES GetAccount, else 14 (SES's usual start).
    ses_max_rate: float | None = Field(default=None, gt=0)
    # Seconds for one SES call, connect and read; every network call has a timeout.
    ses_timeout_s: float = 10.0

    # How long a claimed send may stay "sending" before another worker may take it over
    # (a worker that died mid-send); see the duplicate window in the README.
    send_lease_s: int = Field(default=120, ge=5)
    send_max_attempts: int = Field(default=8, ge=1)
    # After an SES call that may have been accepted (a timeout), how long to wait for SES's Send
    # notification (configuration set → SNS → SQS → reporting) before concluding it was not.
    ses_ambiguous_wait_s: float = Field(default=300.0, ge=0)
    # Multiplies follow-up delays: 1 in production; the demo and tests shorten days to seconds.
    delay_scale: float = Field(default=1.0, gt=0, le=1)
    # Deliver an event's due-now critical and transactional sends in the ingest task itself
    # (one broker hop less per email); bulk and later steps always go through their queues.
    inline_sends: bool = True
    # Pending sends untouched this long are enqueued again (their broker message was lost).
    lost_after_s: int = Field(default=300, ge=2)
    # Redis broker: an accepted event not ingested this long after newer ones were (or with its
    # queue empty) is published again from the outbox; ingest dedupes the copy. See events/outbox.py.
    outbox_grace_s: float = Field(default=30.0, ge=1)
    # Redis transport: unacknowledged messages come back after this many seconds.
    broker_visibility_timeout_s: int = Field(default=300, ge=10)

    # The address the public reaches the API at; unsubscribe links point there.
    public_url: str = "http://127.0.0.1:8000"
    # Signs unsubscribe links (HMAC). No default: a shared default would let anyone forge
    # links. Workers refuse to start without it; `python -c "import secrets;
    # print(secrets.token_urlsafe(48))"` makes one.
    secret_key: SecretStr | None = None
    default_timezone: str = "Europe/Paris"

    # -- the HTTP API and integrations -------------------------------------------------------
    shopify_secret: str | None = None
    stripe_secret: str | None = None
    # YAML file of generic signed webhooks and of the external → Déclic event mappings.
    integrations_file: Path = REPO_ROOT / "api" / "integrations.yaml"
    api_rate_per_minute: int = Field(default=300, ge=1)
    # Event types the API publishes on events.critical, ingested before any other event.
    critical_event_types: list[str] = Field(default_factory=lambda: ["password_reset", "account_updated"])
    # How long an accepted event id (and a webhook delivery id) is remembered at the API, so a
    # retry answers "duplicate" without reaching the broker; ingest dedupes forever behind it.
    api_dedupe_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    # API keys found in Postgres are cached this long per process; a revoked key stops
    # working within this many seconds.
    api_key_cache_s: float = Field(default=5.0, ge=0)
    # Secrets of the generic webhooks of integrations_file, by integration name, as JSON:
    # DECLIC_INTEGRATION_SECRETS='{"zendesk": "..."}'. Shopify and Stripe have their own above.
    integration_secrets: dict[str, str] = Field(default_factory=dict)

    # -- reporting ---------------------------------------------------------------------------
    # SNS topics whose notifications /v1/ses/sns accepts; empty accepts any signed topic.
    sns_topic_arns: list[str] = Field(default_factory=list)
    # An open this many seconds (or fewer) after its delivery is a machine's (scanners, prefetch).
    report_machine_open_s: float = Field(default=5.0, ge=0)
    # More than this many password-reset requests by one contact in a UTC day is flagged.
    report_reset_threshold: int = Field(default=3, ge=1)
    # Event types counted as password-reset requests.
    report_reset_event_types: list[str] = Field(default_factory=lambda: ["password_reset"])
    # Minimum delivered emails in a window before its rates are compared (below: noise).
    report_min_delivered: int = Field(default=30, ge=1)

    log_format: str = "auto"  # "json", "console" or "auto" (console on a terminal)
    log_level: str = "INFO"

    brand_name: str = "Maison Lumière"
    brand_url: str = "https://shop.example.com"
    brand_address: str = "12 rue des Lilas, 75011 Paris, France"
    support_email: str = "support@shop.example.com"

    def require_secret_key(self) -> str:
        """The signing key, or a ConfigurationError naming the variable to set."""
        if self.secret_key is None or len(self.secret_key.get_secret_value()) < 16:
            from workers.errors import ConfigurationError

            raise ConfigurationError(
                "DECLIC_SECRET_KEY is not set (or shorter than 16 characters): it signs unsubscribe "
                "links; set it to a long random value shared by every worker and API process"
            )
        return self.secret_key.get_secret_value()

    @property
    def uses_outbox(self) -> bool:
        """Accepted events are kept in an outbox until ingested: with a Redis broker only."""
        from events.outbox import applies_to

        return applies_to(self.broker_url)

    @property
    def effective_redis_url(self) -> str:
        """Redis for rate limits and dedupe: its own URL, else the broker when that is Redis."""
        if self.redis_url:
            return self.redis_url
        if self.broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
            return self.broker_url
        return "redis://127.0.0.1:6379/0"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
