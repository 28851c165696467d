from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from config.profiles import load_billing_profiles
from domain.billing_profile import BillingProfile

VALID_PROFILE = """
profiles:
  basic:
    description: A test profile
    payment_terms: {terms}
    dunning:
      steps:
        - name: reminder
          after: P3D
          action: reminder
        - name: suspend
          after: P21D
          action: suspend
          min_overdue: {min_overdue}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shipped() -> dict[str, BillingProfile]:
    return load_billing_profiles()


def test_standard_profile(shipped):
    standard = shipped["standard"]
    assert standard.cycle_kind == "monthly"
    assert standard.payment_terms == timedelta(days=14)
    assert not standard.demo
    steps = [(s.name, s.after, s.action, s.min_overdue) for s in standard.dunning.steps]
    assert steps == [
        ("reminder", timedelta(days=3), "reminder", Decimal("0")),
        ("retry_payment", timedelta(days=7), "retry_payment", Decimal("0")),
        ("suspension_notice", timedelta(days=7), "reminder", Decimal("100.00")),
        ("suspend", timedelta(days=21), "suspend", Decimal("100.00")),
    ]


def test_standard_suspension_follows_tkg_61(shipped):
    steps = {s.name: s for s in shipped["standard"].dunning.steps}
    suspend, notice = steps["suspend"], steps["suspension_notice"]
    assert suspend.min_overdue >= Decimal("100")
    assert notice.action == "reminder"
    assert suspend.after - notice.after >= timedelta(days=14)


def test_demo_profile_is_clearly_labelled_and_fast(shipped):
    demo = shipped["demo"]
    assert demo.demo
    assert "demonstration" in demo.description.lower()
    assert (demo.cycle_kind, demo.period_seconds) == ("fixed", 40)
    assert demo.payment_terms == timedelta(seconds=5)
    steps = [(s.name, s.after, s.action, s.min_overdue) for s in demo.dunning.steps]
    assert steps == [
        ("reminder", timedelta(seconds=5), "reminder", Decimal("0")),
        ("retry_payment", timedelta(seconds=10), "retry_payment", Decimal("0")),
        ("suspend", timedelta(seconds=15), "suspend", Decimal("0")),
    ]


def test_cycle_spec_from_profiles(shipped):
    anchor = datetime(2026, 3, 1, 10, tzinfo=UTC)
    monthly = shipped["standard"].cycle_spec(15, "America/New_York", anchor)
    assert (monthly.kind, monthly.bill_cycle_day, monthly.timezone, monthly.anchor) == (
        "monthly",
        15,
        "America/New_York",
        None,
    )
    fixed = shipped["demo"].cycle_spec(1, "Europe/Berlin", anchor)
    assert (fixed.kind, fixed.period_seconds, fixed.anchor) == ("fixed", 40, anchor)
    with pytest.raises(ValueError, match="anchor"):
        shipped["demo"].cycle_spec(1, "Europe/Berlin", None)


def test_due_at_adds_payment_terms(shipped):
    issued = datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert shipped["standard"].due_at(issued) == datetime(2026, 3, 15, 10, tzinfo=UTC)


def test_durations_may_be_seconds_and_policy_name_defaults_to_profile(tmp_path):
    profiles = load_billing_profiles(write(tmp_path, VALID_PROFILE.format(terms=1209600, min_overdue='"100.00"')))
    basic = profiles["basic"]
    assert basic.name == "basic"
    assert basic.dunning.name == "basic"
    assert basic.payment_terms == timedelta(days=14)
    assert basic.dunning.steps[1].min_overdue == Decimal("100.00")


def profile_yaml(terms: str = "P14D", min_overdue: str = '"1"', replace: tuple[str, str] = ("", "")) -> str:
    text = VALID_PROFILE.format(terms=terms, min_overdue=min_overdue)
    return text.replace(*replace) if replace[0] else text


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (profile_yaml(min_overdue="100.00"), ["'basic'", "dunning.steps.1.min_overdue", "float"]),
        (profile_yaml(terms="fourteen days"), ["'basic'", "payment_terms"]),
        (profile_yaml(replace=("after: P21D", "after: P1D")), ["'basic'", "sorted"]),
        (profile_yaml(replace=("payment_terms", "payment_term")), ["'basic'", "payment_term"]),
        (
            profile_yaml(replace=("payment_terms:", "cycle_kind: fixed\n    payment_terms:")),
            ["'basic'", "period_seconds"],
        ),
        (profile_yaml(replace=("    description: A test profile\n", "")), ["'basic'", "description"]),
        (profile_yaml(replace=("  basic:\n", "  basic:\n    name: other\n")), ["'basic'", "other"]),
    ],
)
def test_invalid_profiles_name_the_profile_and_field(tmp_path, text, fragments):
    with pytest.raises(ValueError) as caught:
        load_billing_profiles(write(tmp_path, text))
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("profiles: [unclosed", "YAML"),
        ("standard:\n  description: x\n", "'profiles'"),
        ("profiles: {}\n", "non-empty"),
        ("profiles:\n  basic: just text\n", "'basic'"),
    ],
)
def test_malformed_files_are_reported(tmp_path, text, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_billing_profiles(write(tmp_path, text))


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_billing_profiles(tmp_path / "absent.yaml")
