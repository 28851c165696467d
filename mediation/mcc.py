"""Mobile country codes (ITU-T E.212) of visited networks -> ISO 3166 alpha-2, for roaming rating.

Covers the EU/EEA (roam like at home), the tariff's named non-EU zones and common destinations.
An MCC not listed here is left unmapped: rating rejects it as an unknown roaming zone (kept,
recyclable once added) rather than guessing a zone and charging the wrong price.
"""
from __future__ import annotations

MCC_COUNTRY: dict[str, str] = {
    # EU/EEA
    "232": "AT", "206": "BE", "284": "BG", "219": "HR", "280": "CY", "230": "CZ", "238": "DK", "248": "EE",
    "244": "FI", "208": "FR", "262": "DE", "202": "GR", "216": "HU", "272": "IE", "222": "IT", "247": "LV",
    "246": "LT", "270": "LU", "278": "MT", "204": "NL", "260": "PL", "268": "PT", "226": "RO", "231": "SK",
    "293": "SI", "214": "ES", "240": "SE", "274": "IS", "295": "LI", "242": "NO",
    # Europe outside the EU/EEA
    "228": "CH", "234": "GB", "235": "GB", "286": "TR", "213": "AD", "212": "MC", "292": "SM", "218": "BA",
    "297": "ME", "294": "MK", "276": "AL", "220": "RS", "259": "MD", "255": "UA", "257": "BY", "250": "RU",
    # Elsewhere
    "302": "CA", "310": "US", "311": "US", "312": "US", "313": "US", "314": "US", "315": "US", "316": "US",
    "334": "MX", "724": "BR", "460": "CN", "440": "JP", "450": "KR", "404": "IN", "405": "IN", "505": "AU",
    "530": "NZ", "655": "ZA", "602": "EG", "604": "MA", "520": "TH", "424": "AE", "425": "IL",
}


def country_of_mcc(mcc: str | None) -> str | None:
    """The ISO country of a visited network's MCC; None at home (no MCC) or for an MCC not listed."""
    return None if mcc is None else MCC_COUNTRY.get(mcc)
