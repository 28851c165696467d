"""Which tariff prices an offering's usage.

An offering that names a tariff is rated with that tariff's latest version in the book. An
offering without one keeps its plain catalog `rates` (one price per kind): those are turned into
a tariff here, so there is one rating path (domain.rating_engine) and every record still names
what priced it ("rates-<offering id>", version = the offering's version).

The rates tariff reproduces domain.rating exactly: voice per started minute (one 60 s
increment), SMS per message, data per started MB (1,000 kB increments), all drawing on the
allowances first, no time bands that differ, one price for every destination, and usage abroad
rated as at home (the thin rates never knew about roaming).
"""
from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from domain.catalog import ProductOffering
from domain.tariff import DataRate, Destination, RateInterval, Roaming, RoamingZone, Rounding, SmsRate, Tariff, TariffBook, VoiceGroupRate, VoiceRate

RATES_TARIFF_PREFIX = "rates-"
_GROUP = "all"
_ABROAD = "abroad"


def tariff_for(offering: ProductOffering, book: TariffBook) -> Tariff:
    """The tariff version that rates new usage of `offering` (KeyError if the book lacks it)."""
    if offering.tariff_id is not None:
        return book.latest(offering.tariff_id)
    return rates_tariff(offering)


def tariff_version(offering: ProductOffering, book: TariffBook, tariff_id: str, version: str) -> Tariff:
    """A given version: from the book, or the offering's rates tariff."""
    if tariff_id.startswith(RATES_TARIFF_PREFIX) and offering.tariff_id is None:
        return rates_tariff(offering)
    return book.get(tariff_id, version)


def rates_tariff(offering: ProductOffering) -> Tariff:
    rates = offering.rates
    return _rates_tariff(offering.id, offering.version, offering.name, rates.voice_per_minute, rates.sms_per_message, rates.data_per_mb)


@lru_cache(maxsize=256)
def _rates_tariff(offering_id: str, offering_version: str, name: str, voice_per_minute: Decimal, sms_per_message: Decimal,
                  data_per_mb: Decimal) -> Tariff:
    voice = VoiceRate(intervals=[RateInterval(start_s=0, price_per_unit=voice_per_minute, unit_s=60, increment_s=60)])
    return Tariff(
        id=f"{RATES_TARIFF_PREFIX}{offering_id}"[:64],
        version=offering_version if offering_version.isdigit() else "0",
        name=f"{name} catalog rates",
        # Six decimals: the thin rates were exact (0.005 per MB), so nothing may round here.
        rounding=Rounding(decimals=6, method="half_up"),
        destinations=[Destination(prefix=str(digit), name="Any destination", group=_GROUP) for digit in range(1, 10)],
        voice={_GROUP: VoiceGroupRate(in_bundle=True, default=voice)},
        sms={_GROUP: SmsRate(price=sms_per_message, in_bundle=True)},
        data=DataRate(price=data_per_mb, unit="MB", increment_kb=1000, in_bundle=True),
        # Every country abroad is rated as at home, with no fair-use limit.
        roaming=Roaming(zones=[RoamingZone(id=_ABROAD, name="Anywhere abroad", roam_like_at_home=True,
                                           rlah_voice_group=_GROUP, rlah_sms_group=_GROUP)], rest_of_world=_ABROAD),
    )
