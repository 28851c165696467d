"""One Settings object for every o2c process; values come from O2C_* environment variables."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

# The development key is documented in the README; production sets O2C_API_KEYS.
DEFAULT_DEV_API_KEYS = "dev-admin-key:admin,dev-crm-key:crm,dev-oss-key:oss,dev-support-key:support,dev-finance-key:finance"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="O2C_", extra="ignore")

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "o2c"
    # Account workflows the worker keeps in memory. One evicted from the cache replays its history when its timer
    # fires, so a bill-cycle day with more due accounts than this costs far more CPU (bench/temporal_floor.py).
    worker_max_cached_workflows: int = Field(default=1000, ge=0)
    database_url: str = f"sqlite:///{REPO_ROOT / 'var' / 'o2c.db'}"
    api_keys: str = DEFAULT_DEV_API_KEYS
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Where the OSS sends completion callbacks: o2c's own API.
    public_base_url: str = "http://127.0.0.1:8000"
    oss_base_url: str = "http://127.0.0.1:8100"
    oss_sim_host: str = "127.0.0.1"
    oss_sim_port: int = 8100
    oss_callback_api_key: str = "dev-oss-key"
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    stripe_webhook_secret: str | None = None  # the endpoint's signing secret (whsec_...) for POST /webhooks/stripe
    chargeback_fee: str = "15.00"  # EUR, net, passed on to the customer's next invoice per chargeback (services.disputes)
    # HMAC key for digests of personal data kept for equality checks (an IBAN: services.payment_methods.source_digest).
    # The default is for development only: production must set its own secret (docs/deployment.md).
    pii_hash_key: str = "o2c-dev-pii-hash-key-not-for-production"
    sepa_settle_delay_s: float = 5.0
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    mail_from: str = "billing@o2c.example"
    # The SMS gateway for dunning notices (adapters/notify/sms.py); empty: no SMS is sent (recorded as not sent).
    # No default gateway: a deployment without one must not retry an SMS step forever. `o2c up` points it
    # at its bundled sink, docker-compose at the sms-sink service.
    sms_url: str | None = None
    sms_sink_port: int = 8026  # `o2c sms-sink` / `o2c up`
    sms_sink_host: str = "127.0.0.1"  # 0.0.0.0 only inside a container network (docker-compose)
    catalog_path: Path = REPO_ROOT / "catalog" / "catalog.yaml"
    var_dir: Path = REPO_ROOT / "var"
    # How long an order waits for the OSS before polling it, and how long in total.
    oss_callback_wait_s: float = 30.0
    oss_total_timeout_s: float = 3600.0
    seller_name: str = Field(default="o2c Telekom GmbH")
    seller_address: str = "Musterstraße 1, 10115 Berlin, Deutschland"  # one-line form for texts; documents use the fields below
    seller_vat_id: str = "DE123456789"
    # Structured seller data for the EN 16931 e-invoice (BG-4/BG-5/BG-6, BT-32, BG-17, BT-90).
    seller_street: str = "Musterstraße 1"
    seller_postcode: str = "10115"
    seller_city: str = "Berlin"
    seller_country_code: str = "DE"
    seller_tax_number: str | None = "30/123/45678"  # Steuernummer (BT-32)
    seller_register: str | None = "HRB 123456 B, Amtsgericht Charlottenburg"  # BT-30
    seller_iban: str = "DE02120300000000202051"
    seller_bic: str | None = "BYLADEM1001"
    seller_sepa_creditor_id: str = "DE98ZZZ09999999999"
    seller_contact_name: str = "Kundenservice Abrechnung"
    seller_contact_email: str = "rechnung@o2c.example"
    seller_contact_phone: str = "+49 30 1234567"


@lru_cache
def get_settings() -> Settings:
    return Settings()
