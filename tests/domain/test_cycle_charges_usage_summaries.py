"""domain.charges.UsageSummary: billable records summed by the caller (activities.invoice_charges sums them in
SQL) give exactly the charges the records give one by one, and a summary that would hide a record the invoice
must not bill (or one of another usage period) is refused."""
from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.billing_cycle import CycleSpec, period_containing
from domain.charges import CycleInputs, PlanSpan, ProductTimeline, UsageItem, UsageSummary, compute_cycle_charges, compute_cycle_lines
from tests.domain.test_charges_examples import MARCH, berlin
from tests.domain.test_charges_properties import cycle_inputs


def _summed(inputs: CycleInputs, rnd) -> CycleInputs:
    """`inputs` with its billable records (of any usage period) moved into summaries, each group split at a random
    point into up to two summaries, as a caller that sums them in chunks might; deferred records stay records."""
    cutoff = inputs.period.end + inputs.usage_grace
    groups: dict[tuple, list[UsageItem]] = defaultdict(list)
    kept = []
    for record in inputs.usage:
        if record.event_time < inputs.period.end and record.received_at < cutoff:
            groups[(period_containing(inputs.spec, record.event_time).start, record.product_id, record.usage_type)].append(record)
        else:
            kept.append(record)
    summaries = []
    for records in groups.values():
        rnd.shuffle(records)
        split = rnd.randint(1, len(records))
        for part in (records[:split], records[split:]):
            if part:
                summaries.append(UsageSummary(
                    product_id=part[0].product_id, usage_type=part[0].usage_type, record_ids=[r.record_id for r in part],
                    first_event_at=min(r.event_time for r in part), last_event_at=max(r.event_time for r in part),
                    last_received_at=max(r.received_at for r in part), amount=sum((r.amount for r in part), Decimal(0)),
                    chargeable_units=sum(r.chargeable_units for r in part)))
    rnd.shuffle(summaries)
    return inputs.model_copy(update={"usage": kept, "usage_summaries": summaries})


@settings(max_examples=300, deadline=None)
@given(cycle_inputs(), st.randoms(use_true_random=False))
def test_summed_records_give_the_same_charges_as_the_records(inputs, rnd):
    summed = CycleInputs.model_validate(_summed(inputs, rnd).model_dump())  # validated as a caller's inputs are
    assert compute_cycle_charges(summed) == compute_cycle_charges(inputs)
    assert compute_cycle_lines(summed) == compute_cycle_charges(inputs).charges


SPEC = CycleSpec(kind="monthly", bill_cycle_day=1, timezone="Europe/Berlin")
PRODUCT = ProductTimeline(product_id="p1", plans=[
    PlanSpan(plan_id="s", name="Mobile S", monthly_fee=Decimal("9.99"), effective_at=berlin(2026, 1, 1)),
    PlanSpan(plan_id="l", name="Mobile L", monthly_fee=Decimal("29.99"), effective_at=berlin(2026, 3, 10)),
])


def _summary(first, last, received, ids=("u1", "u2"), amount="1.234567"):
    return UsageSummary(product_id="p1", usage_type="voice", record_ids=list(ids), first_event_at=first, last_event_at=last,
                        last_received_at=received, amount=Decimal(amount), chargeable_units=3)


def _inputs(*summaries, usage=(), grace=timedelta(hours=6)):
    return CycleInputs(spec=SPEC, period=MARCH, products=[PRODUCT], usage=list(usage), usage_summaries=list(summaries), usage_grace=grace)


def test_a_summary_is_one_line_named_by_the_plan_of_its_first_record():
    inputs = _inputs(_summary(berlin(2026, 3, 9, 23), berlin(2026, 3, 20), berlin(2026, 3, 20), ids=("u9", "u10", "u2")))
    (line,) = [c for c in compute_cycle_lines(inputs) if c.source == "usage"]
    assert line.line.description == "Mobile S Voice calls beyond allowance, 2026-03-01 to 2026-03-31, 3 records"
    assert (line.line.net_amount, line.line.quantity, line.usage_ids) == (Decimal("1.23"), Decimal(3), ["u10", "u2", "u9"])


def test_a_summary_and_records_of_the_same_line_add_up():
    record = UsageItem(record_id="u0", product_id="p1", usage_type="voice", event_time=berlin(2026, 3, 2), received_at=berlin(2026, 3, 2),
                       amount=Decimal("0.005433"), chargeable_units=1)
    inputs = _inputs(_summary(berlin(2026, 3, 5), berlin(2026, 3, 6), berlin(2026, 3, 6)), usage=[record])
    (line,) = [c for c in compute_cycle_lines(inputs) if c.source == "usage"]
    # 1.234567 + 0.005433 = 1.24 exactly: summed before rounding, as the records alone would be.
    assert (line.line.net_amount, line.line.quantity, line.usage_ids) == (Decimal("1.24"), Decimal(4), ["u0", "u1", "u2"])
    assert line.line.description.endswith(", 3 records")


@pytest.mark.parametrize(("summary", "message"), [
    (_summary(berlin(2026, 3, 30), berlin(2026, 4, 1), berlin(2026, 4, 1)), "does not bill"),  # an April record
    (_summary(berlin(2026, 3, 30), berlin(2026, 3, 31), berlin(2026, 4, 1, 6)), "does not bill"),  # arrived at the cut-off
    (_summary(berlin(2026, 2, 27), berlin(2026, 3, 2), berlin(2026, 3, 2)), "more than one usage period"),  # February and March
])
def test_a_summary_hiding_a_record_this_line_must_not_take_is_refused(summary, message):
    with pytest.raises(ValidationError, match=message):
        _inputs(summary)


def test_a_record_id_in_a_summary_and_among_the_records_is_refused():
    record = UsageItem(record_id="u1", product_id="p1", usage_type="voice", event_time=berlin(2026, 3, 2), received_at=berlin(2026, 3, 2),
                       amount=Decimal("1"))
    with pytest.raises(ValidationError, match="duplicate usage record_id"):
        _inputs(_summary(berlin(2026, 3, 5), berlin(2026, 3, 6), berlin(2026, 3, 6)), usage=[record])


def test_a_summary_ending_before_it_starts_is_refused():
    with pytest.raises(ValidationError, match="cannot precede"):
        _summary(berlin(2026, 3, 6), berlin(2026, 3, 5), berlin(2026, 3, 6))
