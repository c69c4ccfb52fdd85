"""The ``mqtt:``, ``ocpp:`` and ``api:`` sections: how the daemon talks to brokers, chargers and
clients."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from controller.config.fields import _LISTEN_FIX, _host, _Model, _mqtt_topic, is_loopback
from controller.passwords import is_password_hash

# -------------------------------------------------------------------- connections


class TlsConfig(_Model):
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class MqttConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = Field("v2x-controller", min_length=1, max_length=128)
    base_topic: str = Field(
        "v2x", min_length=1, description="Prefix for status, state, commands and replies."
    )
    keepalive_s: int = Field(30, ge=5, le=3600)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    homeassistant_discovery: bool = True
    discovery_prefix: str = "homeassistant"

    @field_validator("host")
    @classmethod
    def _a_host(cls, value: str) -> str:
        return _host(value, "write the broker's name or address, e.g. 127.0.0.1 or broker.lan")

    @field_validator("base_topic", "discovery_prefix")
    @classmethod
    def _a_prefix(cls, value: str, info: ValidationInfo) -> str:
        # The controller subscribes to <base_topic>/cmd/# and publishes under both: a wildcard in
        # them would make every publish fail.
        example = "v2x" if info.field_name == "base_topic" else "homeassistant"
        topic = _mqtt_topic(value, f"write a plain topic prefix such as {example}")
        assert topic is not None
        return topic

    @field_validator("username", "password", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class OcppTlsConfig(_Model):
    cert_file: Path = Field(description="Server certificate (PEM).")
    key_file: Path = Field(description="Server private key (PEM).")
    client_ca_file: Path | None = Field(
        None, description="CA for client certificates: security profile 3 (mTLS)."
    )


class OcppConfig(_Model):
    host: str = "0.0.0.0"
    port: int = Field(9000, ge=1, le=65535)
    tls: OcppTlsConfig | None = None
    accept_unknown_chargers: bool = False
    heartbeat_interval_s: int = Field(300, ge=10, le=86400)
    meter_sample_interval_s: int = Field(10, ge=1, le=3600)
    profile_validity_hours: float = Field(2.0, gt=0, le=48, description="How long a sent TxProfile holds.")
    call_timeout_s: float = Field(10.0, gt=0, le=120)
    accepted_id_tokens: list[Annotated[str, Field(min_length=1, max_length=255)]] | None = Field(
        None,
        min_length=1,
        description="RFID cards / idTokens that may charge (case-insensitive); absent: every token is accepted.",
    )

    @field_validator("host")
    @classmethod
    def _a_host(cls, value: str) -> str:
        return _host(value, _LISTEN_FIX)


class ApiConfig(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    token: SecretStr | None = Field(
        None, description="Bearer token for API clients (every endpoint but /health); empty: no token."
    )
    password_hash: str | None = Field(
        None,
        description="The dashboard's login password, as `v2x hash-password` prints it. Without it (and "
        "without a token) the API serves localhost only, without login.",
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate (chain): serve HTTPS.")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    metrics_public: bool = Field(
        False, description="Serve /metrics without authentication (for a local Prometheus)."
    )
    session_hours: float = Field(
        720.0, gt=0, le=8760, description="How long a dashboard login lasts (unused for that long)."
    )

    @field_validator("host")
    @classmethod
    def _a_host(cls, value: str) -> str:
        return _host(value, _LISTEN_FIX)

    @field_validator("token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("password_hash", mode="before")
    @classmethod
    def _a_password_hash(cls, value: Any) -> Any:
        if value == "" or value is None:
            return None
        if not isinstance(value, str) or not is_password_hash(value):
            raise PydanticCustomError(
                "not_a_password_hash",
                "is not a password hash; run `v2x hash-password` and paste its output here",
            )
        return value

    @model_validator(mode="after")
    def _guarded_beyond_localhost(self) -> ApiConfig:
        if self.enabled and not is_loopback(self.host) and self.password_hash is None and self.token is None:
            raise PydanticCustomError(
                "api_open",
                "api.host {host} is reachable from the network, but there is no api.password_hash and no "
                "api.token: anyone could steer the cars. Set api.password_hash (`v2x hash-password`) or "
                "api.token, or listen on 127.0.0.1",
                {"host": self.host},
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise PydanticCustomError(
                "api_tls_pair", "api.tls_cert_file and api.tls_key_file go together: set both or neither"
            )
        return self
