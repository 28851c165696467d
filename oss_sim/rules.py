"""Failure injection: how an order should misbehave, chosen per request header or by rule."""

import itertools
from dataclasses import dataclass
from typing import Literal, get_args

from oss_sim.errors import SimError
from oss_sim.models import BehaviourKind, RuleCreate, RuleMatch

BEHAVIOUR_HEADER = "X-Sim-Behaviour"


@dataclass(frozen=True)
class Behaviour:
    """`delay_s` None means "the simulator's default delay"."""

    kind: BehaviourKind | Literal["normal"] = "normal"
    delay_s: float | None = None


NORMAL = Behaviour()


def parse_behaviour_header(value: str) -> Behaviour:
    """Parse `fail | reject | no-callback | unavailable | slow:<seconds>` (fail also takes `:<seconds>`)."""
    kind, _, delay_text = value.strip().partition(":")
    if kind not in get_args(BehaviourKind):
        raise SimError(400, "invalidBehaviour", f"unknown {BEHAVIOUR_HEADER} {value!r}")
    delay_s: float | None = None
    if delay_text:
        if kind not in ("slow", "fail"):
            raise SimError(400, "invalidBehaviour", f"{kind!r} takes no delay")
        try:
            delay_s = float(delay_text)
        except ValueError:
            raise SimError(400, "invalidBehaviour", f"delay {delay_text!r} is not a number") from None
        if delay_s < 0:
            raise SimError(400, "invalidBehaviour", "delay must not be negative")
    if kind == "slow" and delay_s is None:
        raise SimError(400, "invalidBehaviour", "use slow:<seconds>")
    return Behaviour(kind=kind, delay_s=delay_s)  # type: ignore[arg-type]


@dataclass(frozen=True)
class OrderFacts:
    """What rules can match on; an order matches a field if any of its items does."""

    external_id: str | None
    msisdns: frozenset[str]
    product_offering_ids: frozenset[str]
    actions: frozenset[str]

    def matches(self, match: RuleMatch) -> bool:
        return (
            (match.externalId is None or match.externalId == self.external_id)
            and (match.msisdn is None or match.msisdn in self.msisdns)
            and (match.productOfferingId is None or match.productOfferingId in self.product_offering_ids)
            and (match.action is None or match.action in self.actions)
        )


@dataclass
class Rule:
    id: str
    spec: RuleCreate
    times_left: int | None
    matched: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            **self.spec.model_dump(exclude_none=True),
            "timesLeft": self.times_left,
            "matched": self.matched,
        }


class RuleBook:
    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self._ids = itertools.count(1)

    def add(self, spec: RuleCreate) -> Rule:
        rule = Rule(id=f"rule-{next(self._ids)}", spec=spec, times_left=spec.times)
        self.rules.append(rule)
        return rule

    def take_match(self, facts: OrderFacts) -> Behaviour | None:
        """The first matching rule decides; using it counts against its `times`."""
        for rule in self.rules:
            if not facts.matches(rule.spec.match):
                continue
            rule.matched += 1
            if rule.times_left is not None:
                rule.times_left -= 1
                if rule.times_left == 0:
                    self.rules.remove(rule)
            return Behaviour(kind=rule.spec.behaviour, delay_s=rule.spec.delaySeconds)
        return None

    def clear(self) -> None:
        self.rules.clear()
