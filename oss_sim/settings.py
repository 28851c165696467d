"""Configuration of the OSS simulator, read from the environment."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SimSettings(BaseSettings):
    # validate_by_name lets tests build settings with field names while a deployed
    # simulator reads the O2C_* environment variables.
    model_config = SettingsConfigDict(validate_by_name=True, validate_by_alias=True, extra="ignore")

    callback_url: str | None = Field(
        default=None,
        validation_alias="O2C_OSS_CALLBACK_URL",
        description="Where ServiceOrderStateChangeEvents are POSTed unless an order overrides it.",
    )
    callback_api_key: str | None = Field(
        default=None,
        validation_alias="O2C_OSS_CALLBACK_API_KEY",
        description="Sent as X-API-Key on every callback.",
    )
    default_delay_s: float = Field(
        default=1.0,
        ge=0,
        validation_alias="O2C_OSS_SIM_DELAY_S",
        description="How long an asynchronous order takes to complete or fail.",
    )
    callback_attempts: int = Field(default=4, ge=1, validation_alias="O2C_OSS_SIM_CALLBACK_ATTEMPTS")
    callback_backoff_s: float = Field(
        default=0.2,
        ge=0,
        validation_alias="O2C_OSS_SIM_CALLBACK_BACKOFF_S",
        description="First pause between callback attempts; doubles after each failed attempt.",
    )
    callback_timeout_s: float = Field(default=5.0, gt=0, validation_alias="O2C_OSS_SIM_CALLBACK_TIMEOUT_S")
