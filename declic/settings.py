"""The one place configuration is read: ``DECLIC_*`` environment variables.

Build a :class:`Settings` once at start-up and pass it down. AWS credentials, region and
endpoints are boto3's own standard variables (``AWS_REGION``, ``AWS_ENDPOINT_URL_SESV2``, ...)
and are deliberately not duplicated here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
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
    # Seconds for one SES call, connect and read; every network call has a timeout.
    ses_timeout_s: float = 10.0

    # How long a claimed send may stay "sending" before another worker may take it over
    # (a worker that died mid-send); see the duplicate window in the README.
    send_lease_s: int = Field(default=120, ge=5)
    send_max_attempts: int = Field(default=8, ge=1)
    # Redis transport: unacknowledged messages come back after this many seconds.
    broker_visibility_timeout_s: int = Field(default=300, ge=10)

    log_format: str = "auto"  # "json", "console" or "auto" (console on a terminal)
    log_level: str = "INFO"

    brand_name: str = "Maison Lumière"
    brand_url: str = "https://shop.example.com"
    brand_address: str = "12 rue des Lilas, 75011 Paris, France"
    support_email: str = "support@shop.example.com"

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
