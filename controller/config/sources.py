"""Internet sources the daemon fetches on its own: market price providers (``tariff.import.provider``,
``tariff.import.backup_provider``, the same under ``export``) and PV forecast services
(``forecast.pv_sources``). One model per source, told apart by ``type``; each ``type`` is also the name
its fetcher class is registered under in ``controller.sources`` (a test keeps the two lists equal).

Secrets never sit in the config: a source that needs a token names the environment variable holding
it (``token_env``). ``base_url`` exists so an installer (and the tests) can point a source elsewhere.
Azimuths are compass degrees (0 north, 90 east, 180 south, 270 west); each source converts them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from controller.config.fields import _Model

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_AREA = r"^[A-Za-z0-9_-]{1,20}$"


def _base_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("base_url must start with http:// or https://")
    return value.rstrip("/")


class _SourceBase(_Model):
    base_url: str | None = Field(
        None, description="Where the source's API answers; leave unset for the provider's own address."
    )
    exchange_rate: float | None = Field(
        None,
        gt=0,
        le=100_000,
        description="Site currency per unit of the source's currency, for a source that publishes in "
        "another currency (e.g. 0.087 EUR per SEK).",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _base_url(value)


class EntsoeSource(_SourceBase):
    """ENTSO-E transparency platform, day-ahead prices (document A44) for one bidding zone, EUR/MWh."""

    type: Literal["entsoe"]
    zone: str = Field(
        pattern=_AREA,
        description="Bidding zone: a short name (NL, BE, DE-LU, AT, FR, DK1, SE3, NO1, ...) or its EIC code.",
    )
    token_env: str = Field(
        "ENTSOE_TOKEN", pattern=_ENV_NAME, description="Environment variable holding the API security token."
    )


class NordPoolSource(_SourceBase):
    """Nord Pool day-ahead prices for one delivery area, in the area's currency or EUR."""

    type: Literal["nord_pool"]
    area: str = Field(pattern=_AREA, description="Delivery area: SE1-SE4, NO1-NO5, DK1, DK2, FI, EE, ...")
    currency: str | None = Field(
        None,
        min_length=3,
        max_length=3,
        description="Currency to ask for (EUR or the area's own); default: the site currency.",
    )


class AwattarSource(_SourceBase):
    """aWATTar market data (EPEX day-ahead) for Germany or Austria, no key needed."""

    type: Literal["awattar"]
    country: Literal["DE", "AT"] = "DE"


class EnergiDataServiceSource(_SourceBase):
    """Energi Data Service (Energinet, Denmark) day-ahead prices, no key needed."""

    type: Literal["energi_data_service"]
    area: Literal["DK1", "DK2"] = "DK1"
    currency: Literal["DKK", "EUR"] = "DKK"


class OctopusSource(_SourceBase):
    """Octopus Energy (GB) half-hourly unit rates of a product, e.g. Agile import or export, incl. VAT."""

    type: Literal["octopus"]
    product_code: str = Field(
        pattern=r"^[A-Z0-9-]{3,40}$", description="e.g. AGILE-24-10-01 or AGILE-OUTGOING-19-05-13."
    )
    region: str = Field(
        pattern=r"^[A-P]$", description="Grid supply point group letter A-P (the tariff code's last letter)."
    )
    direct_debit: bool = Field(
        True,
        description="The account pays by Direct Debit: where a tariff lists rates per payment method, "
        "these are the ones used.",
    )


class TibberSource(_SourceBase):
    """Tibber's retail price (energy + taxes) for the account's home, via its GraphQL API."""

    type: Literal["tibber"]
    token_env: str = Field(
        "TIBBER_TOKEN", pattern=_ENV_NAME, description="Environment variable holding the access token."
    )
    home_id: str | None = Field(
        None, max_length=64, description="Which home of the account; default: the first one."
    )


PriceSource = Annotated[
    EntsoeSource | NordPoolSource | AwattarSource | EnergiDataServiceSource | OctopusSource | TibberSource,
    Field(discriminator="type"),
]


class PvArray(_Model):
    """One PV array (one orientation)."""

    tilt_deg: float = Field(ge=0, le=90, description="0 = flat, 90 = vertical.")
    azimuth_deg: float = Field(ge=0, lt=360, description="Compass: 90 east, 180 south, 270 west.")
    kwp: float = Field(gt=0, le=1000, description="Peak power of the modules, kWp.")
    losses_percent: float = Field(
        14.0, ge=0, lt=100, description="System losses (inverter, wiring, soiling), percent."
    )
    inverter_kw: float | None = Field(None, gt=0, le=1000, description="AC limit of its inverter, kW.")


class _PvSourceBase(_SourceBase):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    arrays: list[PvArray] = Field(min_length=1, max_length=8)


class OpenMeteoSource(_PvSourceBase):
    """Open-Meteo forecast of irradiance on each array's plane, turned into AC power."""

    type: Literal["open_meteo"]


class ForecastSolarSource(_PvSourceBase):
    """forecast.solar estimate per array (free tier without a key: 12 calls per hour per IP)."""

    type: Literal["forecast_solar"]
    api_key_env: str | None = Field(
        None, pattern=_ENV_NAME, description="Environment variable holding a paid plan's API key."
    )


PvSource = Annotated[OpenMeteoSource | ForecastSolarSource, Field(discriminator="type")]
