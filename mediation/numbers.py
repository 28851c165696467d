"""Phone numbers as switches write them -> E.164 digits without "+" (how products store MSISDNs).

Rules, in order (`country_code` is the operator's, default 49 = Germany):
- "+4915112345678"  -> "4915112345678"   (international, with plus)
- "004915112345678" -> "4915112345678"   (international, with the "00" international prefix)
- "015112345678"    -> "4915112345678"   (national, with the trunk prefix 0)
- "4915112345678"   -> "4915112345678"   (already E.164: a number that starts with 1-9 is taken
                                          as international, the way switches set up for E.164
                                          write it; a national number without its 0 cannot be
                                          told apart from it)
Spaces, hyphens, dots, slashes and parentheses are dropped first ("+49 151 1234-5678").
The result must be 7 to 15 digits (E.164 allows at most 15); anything else, such as an extension
("1001"), a short code ("22255"), "anonymous" or an empty field, gives None.
"""
from __future__ import annotations

_PUNCTUATION = str.maketrans("", "", " -./()")
MIN_DIGITS = 7
MAX_DIGITS = 15


def check_country_code(country_code: str) -> None:
    """Parsers call this once, up front, so a typo in configuration fails loudly instead of
    turning every national number into a wrong one."""
    if not (country_code.isdigit() and country_code.isascii()) or not 1 <= len(country_code) <= 3 or country_code[0] == "0":
        raise ValueError(f"country code must be 1-3 digits without a leading 0 (e.g. '49'), got {country_code!r}")


def normalise_number(raw: str, country_code: str = "49") -> str | None:
    # Fast path: what a switch configured for E.164 writes, already clean.
    if raw.isdigit() and raw.isascii() and raw[0] != "0":
        return raw if MIN_DIGITS <= len(raw) <= MAX_DIGITS else None
    number = raw.strip().translate(_PUNCTUATION)
    if number.startswith("+"):
        number = number[1:]
    elif number.startswith("00"):
        number = number[2:]
    elif number.startswith("0"):
        number = country_code + number[1:]
    if not (number.isdigit() and number.isascii()) or number[0] == "0":
        return None
    return number if MIN_DIGITS <= len(number) <= MAX_DIGITS else None
