import pytest

from mediation.numbers import normalise_number


@pytest.mark.parametrize(("raw", "expected"), [
    ("4915112345678", "4915112345678"),  # already E.164 digits
    ("+4915112345678", "4915112345678"),
    ("004915112345678", "4915112345678"),
    ("015112345678", "4915112345678"),  # national: trunk prefix 0 -> country code
    ("+49 151 1234-5678", "4915112345678"),  # punctuation dropped
    (" 0151 12345678 ", "4915112345678"),
    ("+43 664 1234567", "436641234567"),  # another country stays itself
    ("1001", None),  # an extension
    ("22255", None),  # a short code
    ("112", None),
    ("anonymous", None),
    ("", None),
    ("+", None),
    ("0049", None),
    ("0004915112345678", None),  # three zeros: neither national nor international
    ("4915112345678901234", None),  # longer than E.164's 15 digits
    ("٤٩١٥١١٢٣٤٥٦٧٨", None),  # non-ASCII digits are not what a switch writes
])
def test_normalise_number(raw, expected):
    assert normalise_number(raw) == expected


def test_the_country_code_for_national_numbers_is_configurable():
    assert normalise_number("06641234567", "43") == "436641234567"
    assert normalise_number("+4915112345678", "43") == "4915112345678"
