"""Property-based tests of the rating engine (hypothesis).

The oracle is a deliberately naive reference rater below: it walks every billed second, asks
zoneinfo for the local time of each increment start, keeps money as Fractions and rounds once.
It shares no code with the engine, only the tariff data.

Window: 27 March to 7 April 2026 in Berlin: the spring DST change, weekends, Good Friday and
Easter Monday, so band changes, holidays and DST all occur.
"""
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.money import to_cents
from domain.rating import Allowances
from domain.rating_engine import AllowanceLimits, AllowanceState, CompiledTariff, RatingEvent, rate_events, rerate
from domain.tariff import Tariff

BERLIN = ZoneInfo("Europe/Berlin")
HOLIDAYS = frozenset({date(2026, 4, 3), date(2026, 4, 6)})
WINDOW_START = datetime(2026, 3, 27, tzinfo=BERLIN).astimezone(UTC)
WINDOW_S = 11 * 86_400
# Local midnights, 08:00 and 19:00 of every day in the window: starts near them make calls
# cross band boundaries far more often than uniform starts would.
BOUNDARIES = [datetime.combine(date(2026, 3, 27) + timedelta(days=d), time(h), tzinfo=BERLIN).astimezone(UTC)
              for d in range(11) for h in (0, 8, 19)]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PLAN = Allowances(voice_minutes=5, sms=3, data_mb=2)
EU_CAP = 1_500_000
SETTINGS = settings(max_examples=60, deadline=None)


def intervals(*spec: tuple[int, str, int, int]) -> list[dict]:
    return [{"start_s": s, "price_per_unit": p, "unit_s": u, "increment_s": i} for s, p, u, i in spec]


def national(price: str) -> dict:
    return {"intervals": intervals((0, price, 60, 60), (60, price, 60, 1))}


def tariff(decimals: int, method: str, prices: tuple[str, str, str, str] = ("0.09", "0.05", "0.03", "0.017"),
           thirty_ten: str = "0.23", surcharge: str = "0.77") -> Tariff:
    peak, offpeak, weekend, holiday = prices
    return Tariff.model_validate({
        "id": "prop", "version": "1",
        "rounding": {"decimals": decimals, "method": method},
        "time_bands": {"peak": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "19:00"}]},
        "destinations": [
            {"prefix": "4915", "name": "DE mobile", "group": "national", "zone": "home"},
            {"prefix": "49", "name": "DE fixed", "group": "national", "zone": "home"},
            {"prefix": "49900", "name": "Premium", "group": "premium", "zone": "home"},
            {"prefix": "33", "name": "France", "group": "intl", "zone": "eu"},
            {"prefix": "43", "name": "Austria", "group": "thirty_ten", "zone": "eu"},
            {"prefix": "1", "name": "USA", "group": "intl", "zone": "world"},
        ],
        "voice": {
            "national": {"in_bundle": True, "default": national(offpeak), "peak": national(peak),
                         "weekend": national(weekend), "holiday": national(holiday)},
            "premium": {"max_cost": "1.5", "default": {"connect_fee": "0.25", "intervals": intervals((0, "0.99", 60, 1))}},
            "intl": {"default": {"intervals": intervals((0, "0.19", 60, 60))}},
            "thirty_ten": {"default": {"connect_fee": "0.015", "intervals": intervals((0, thirty_ten, 60, 30), (30, thirty_ten, 60, 10))}},
        },
        "sms": {"national": {"price": "0.09", "in_bundle": True}, "premium": {"price": "0.19"},
                "intl": {"price": "0.06"}, "thirty_ten": {"price": "0.06"}},
        "data": {"price": "0.0123", "unit": "MB", "increment_kb": 10, "in_bundle": True},
        "roaming": {"zones": [
            {"id": "eu", "roam_like_at_home": True, "rlah_voice_group": "national", "rlah_sms_group": "national",
             "fair_use": {"wholesale_cap_per_gb": "1.10", "surcharge_per_gb": surcharge}, "countries": ["FR"]},
            {"id": "world", "countries": ["US"], "voice": {"default": {"intervals": intervals((0, "1.49", 60, 60))}},
             "sms": {"price": "0.49"}, "data": {"price": "0.99", "unit": "GB", "increment_kb": 100}},
        ]},
    })


TARIFFS = [tariff(4, "half_up"), tariff(2, "up"), tariff(6, "down"), tariff(3, "half_up")]
# Every increment's price exact in micro-units (0.06/min = 0.001/s, 1.00/GB = 0.00001 per 10 kB),
# 6 decimals: no rounding happens at all.
EXACT_TARIFF = tariff(6, "half_up", ("0.12", "0.06", "0.03", "0.018"), thirty_ten="0.24", surcharge="1.00")

NUMBERS = ["4915112345678", "49301234567", "49900123456", "33612345678", "43660123456", "12125550100"]
ZONES = [None, None, None, "FR", "US"]
DISPOSITIONS = ["ANSWERED"] * 5 + ["BUSY", "NO ANSWER"]


@st.composite
def cycles(draw) -> list[RatingEvent]:
    starts = st.one_of(
        st.integers(0, WINDOW_S).map(lambda s: WINDOW_START + timedelta(seconds=s)),
        st.tuples(st.sampled_from(BOUNDARIES), st.integers(-700, 90)).map(lambda b: b[0] + timedelta(seconds=b[1])),
    )
    raw = draw(st.lists(st.tuples(
        starts, st.integers(0, 2), st.sampled_from(["voice", "voice", "sms", "data"]),
        st.integers(0, 700), st.sampled_from(NUMBERS), st.sampled_from(ZONES), st.sampled_from(DISPOSITIONS),
    ), max_size=25))
    events = []
    for index, (instant, micro, kind, q, number, zone, disposition) in enumerate(raw):
        start = instant + timedelta(microseconds=micro)
        record_id = f"r{index:03d}"
        if kind == "voice":
            events.append(RatingEvent.voice(record_id, start, q, number, zone=zone, disposition=disposition))
        elif kind == "sms":
            events.append(RatingEvent.sms(record_id, start, number, messages=q % 3 + 1, zone=zone))
        else:
            events.append(RatingEvent.data(record_id, start, q * 4_999, zone=zone))
    return events


# --- the naive reference -------------------------------------------------------------------


@lru_cache(maxsize=None)
def ref_band(utc_minute: int) -> str:
    # Band boundaries fall on whole minutes (Berlin offsets are whole hours), so a minute decides.
    local = datetime.fromtimestamp(utc_minute * 60, UTC).astimezone(BERLIN)
    if local.date() in HOLIDAYS:
        return "holiday"
    if local.weekday() >= 5:
        return "weekend"
    return "peak" if 8 <= local.hour < 19 else "offpeak"


def round_micros(exact_micros: Fraction, decimals: int, method: str) -> int:
    step = 10 ** (6 - decimals)
    steps = exact_micros / step
    whole = steps.numerator // steps.denominator
    rest = steps - whole
    if method == "up" and rest > 0 or method == "half_up" and rest >= Fraction(1, 2):
        whole += 1
    return whole * step


def micros(value: Decimal) -> Fraction:
    return Fraction(value) * 1_000_000


def reference(events: list[RatingEvent], t: Tariff, limits: Allowances = PLAN, eu_cap: int = EU_CAP) -> dict[str, tuple[int, int, Fraction, int]]:
    """record_id -> (billed units, allowance units, exact amount in micros, rounded amount in micros)."""
    left = {"voice": limits.voice_minutes * 60, "sms": limits.sms, "data": limits.data_mb * 1_000_000}
    eu_used = 0
    zones = {z.id: z for z in t.roaming.zones}
    out = {}
    for e in sorted(events, key=lambda e: (e.start, e.record_id)):
        zone = {None: None, "FR": zones["eu"], "US": zones["world"]}[e.zone]
        dest = max((d for d in t.destinations if e.destination and e.destination.startswith(d.prefix)), key=lambda d: len(d.prefix), default=None)
        if e.kind == "voice":
            if e.disposition != "ANSWERED":
                out[e.record_id] = (0, 0, Fraction(0), 0)
                continue
            group = t.voice[dest.group]
            if zone is not None and not zone.roam_like_at_home:
                group = zone.voice
            elif zone is not None and dest.zone == "eu":
                group = t.voice[zone.rlah_voice_group]
            t0 = (e.start - EPOCH) // timedelta(seconds=1)
            exact = micros(group.for_band(ref_band(t0 // 60)).connect_fee)
            billed = free = 0
            charged_seconds: dict[tuple[Decimal, int], int] = {}  # (price per unit, unit) -> seconds
            layout = group.default.intervals
            for i, interval in enumerate(layout):
                end = layout[i + 1].start_s if i + 1 < len(layout) else e.quantity
                offset = interval.start_s
                while offset < min(e.quantity, end):
                    band = ref_band((t0 + offset) // 60)
                    rate = group.for_band(band).intervals[i]
                    for _ in range(interval.increment_s):
                        billed += 1
                        if group.in_bundle and zone_allows(zone) and left["voice"] > 0:
                            left["voice"] -= 1
                            free += 1
                        else:
                            key = (rate.price_per_unit, rate.unit_s)
                            charged_seconds[key] = charged_seconds.get(key, 0) + 1
                    offset += interval.increment_s
            exact += sum((micros(price) * seconds / unit for (price, unit), seconds in charged_seconds.items()), Fraction(0))
            out[e.record_id] = (billed, free, *capped(exact, group.max_cost, t))
        elif e.kind == "sms":
            rate = t.sms[dest.group]
            if zone is not None and not zone.roam_like_at_home:
                rate = zone.sms
            elif zone is not None and dest.zone == "eu":
                rate = t.sms[zone.rlah_sms_group]
            free = min(e.quantity, left["sms"]) if rate.in_bundle else 0
            left["sms"] -= free
            exact = micros(rate.price) * (e.quantity - free)
            out[e.record_id] = (e.quantity, free, *capped(exact, rate.max_cost, t))
        else:
            rate = t.data if zone is None or zone.roam_like_at_home else zone.data
            step = rate.increment_kb * 1000
            billed = -(-e.quantity // step) * step
            free = min(billed, left["data"]) if rate.in_bundle else 0
            left["data"] -= free
            exact = micros(rate.price) * (billed - free) / rate.unit_bytes
            if zone is not None and zone.fair_use is not None:
                over = max(0, eu_used + billed - eu_cap) - max(0, eu_used - eu_cap)
                exact += micros(zone.fair_use.surcharge_per_gb) * over / 1_000_000_000
                eu_used += billed
            out[e.record_id] = (billed, free, *capped(exact, rate.max_cost, t))
    return out


def zone_allows(zone) -> bool:
    return zone is None or zone.roam_like_at_home


def capped(exact: Fraction, max_cost: Decimal | None, t: Tariff) -> tuple[Fraction, int]:
    rounded = round_micros(exact, t.rounding.decimals, t.rounding.method)
    if max_cost is not None:
        cap = int(micros(max_cost))
        return min(exact, Fraction(cap)), min(rounded, cap)
    return exact, rounded


def run(events: list[RatingEvent], t: Tariff):
    return rate_events(events, t, PLAN, holidays=HOLIDAYS, eu_data_cap_bytes=EU_CAP)


# --- properties ----------------------------------------------------------------------------


@SETTINGS
@given(cycles(), st.sampled_from(TARIFFS))
def test_engine_matches_the_naive_reference(events, t):
    expected = reference(events, t)
    for rated in run(events, t).results:
        billed, free, _exact, rounded = expected[rated.record_id]
        assert (rated.billed_units, rated.allowance_units, rated.amount_micros) == (billed, free, rounded), rated


@SETTINGS
@given(cycles(), st.sampled_from(TARIFFS), st.lists(st.integers(0, 25), max_size=6), st.randoms())
def test_total_does_not_depend_on_how_a_time_ordered_file_is_split_into_batches(events, t, cuts, rng):
    # A CDR file arrives in time order; batches are consecutive slices of it, each in any order
    # inside (the engine sorts), carrying the allowance consumed so far.
    rows = sorted(e.as_row() for e in events)
    compiled = CompiledTariff(t, HOLIDAYS)
    limits = AllowanceLimits.from_allowances(PLAN)
    whole = compiled.rate_batch(rows, limits, AllowanceState(), EU_CAP)

    state, pieces, bounds = AllowanceState(), [], sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    for lo, hi in zip(bounds, bounds[1:]):
        batch = rows[lo:hi]
        rng.shuffle(batch)
        pieces.extend(compiled.rate_batch(batch, limits, state, EU_CAP))
    assert pieces == whole
    assert sum(r[4] for r in pieces) == sum(r[4] for r in whole)


@SETTINGS
@given(cycles(), st.sampled_from(TARIFFS), st.randoms())
def test_rating_is_independent_of_input_order(events, t, rng):
    shuffled = list(events)
    rng.shuffle(shuffled)
    first, second = run(events, t), run(shuffled, t)
    assert first.results == second.results
    assert first.used == second.used


@SETTINGS
@given(cycles(), st.sampled_from(TARIFFS))
def test_rounding_never_loses_or_creates_a_cent_across_a_cycle(events, t):
    results = run(events, t).results
    expected = reference(events, t)
    quantum = Fraction(10 ** (6 - t.rounding.decimals))
    for rated in results:
        # Parts are the event split, never extra money: they add up to the event exactly.
        if rated.parts:
            assert sum(p.amount for p in rated.parts) == rated.amount
            assert sum(p.units for p in rated.parts) == rated.billed_units
        # Each event is off its exact amount by less than one rounding step, in the method's direction.
        exact = expected[rated.record_id][2]
        error = rated.amount_micros - exact
        if t.rounding.method == "up":
            assert 0 <= error < quantum
        elif t.rounding.method == "down":
            assert -quantum < error <= 0
        else:
            assert -quantum / 2 < error <= quantum / 2
    # The cycle total is an exact sum: Decimal and integer micro-units agree to the last digit.
    total = sum((r.amount for r in results), Decimal(0))
    assert total == Decimal(sum(r.amount_micros for r in results)).scaleb(-6)


@SETTINGS
@given(cycles())
def test_with_micro_exact_prices_the_invoice_total_equals_the_exact_total_to_the_cent(events):
    results = run(events, EXACT_TARIFF).results
    exact_total = sum((v[2] for v in reference(events, EXACT_TARIFF).values()), Fraction(0)) / 1_000_000
    total = sum((r.amount for r in results), Decimal(0))
    assert Fraction(total) == exact_total
    assert to_cents(total) == to_cents(Decimal(exact_total.numerator) / Decimal(exact_total.denominator))


@SETTINGS
@given(cycles(), st.sampled_from(TARIFFS), st.sampled_from(TARIFFS))
def test_rerating_replaces_and_is_idempotent(events, old, new):
    before = run(events, old)
    first = rerate(events, before.results, new, PLAN, holidays=HOLIDAYS, eu_data_cap_bytes=EU_CAP)
    second = rerate(events, first.results, new, PLAN, holidays=HOLIDAYS, eu_data_cap_bytes=EU_CAP)
    fresh = run(events, new)
    assert first.results == second.results == fresh.results
    assert second.total_delta == 0 and second.changed == []
    assert sum(r.amount for r in before.results) + first.total_delta == sum(r.amount for r in fresh.results)


@SETTINGS
@given(st.lists(st.tuples(cycles(), st.integers(0, 400), st.integers(0, 3_000_000), st.integers(0, 2_000_000)), min_size=1, max_size=4),
       st.sampled_from(TARIFFS))
def test_rating_many_runs_in_one_call_gives_what_rating_each_run_alone_gives(runs, t):
    # The bulk import rates thousands of (product, period) groups in one rate_runs call; each must come
    # out as if rated alone, from its own counter (allowances part used, the EU cap part reached).
    limits = AllowanceLimits.from_allowances(PLAN)

    def state(voice_s: int, data_bytes: int, eu: int) -> AllowanceState:
        return AllowanceState(voice_s=voice_s, data_bytes=data_bytes, eu_roaming_data_bytes=eu)

    alone, alone_states = [], []
    for events, voice_s, data_bytes, eu in runs:
        used = state(voice_s, data_bytes, eu)
        alone.append(CompiledTariff(t, HOLIDAYS).rate_batch([e.as_row() for e in events], limits, used, EU_CAP))
        alone_states.append(used)
    together_states = [state(voice_s, data_bytes, eu) for _, voice_s, data_bytes, eu in runs]
    together = CompiledTariff(t, HOLIDAYS).rate_runs(
        [([e.as_row() for e in reversed(events)], limits, used, EU_CAP) for (events, *_), used in zip(runs, together_states)])
    assert together == alone
    assert together_states == alone_states
