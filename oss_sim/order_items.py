"""Turns submitted TMF order items into validated OrderItems, refusing what o2c must not send."""

import json
from typing import Any

from oss_sim.errors import SimError
from oss_sim.inventory import BARRING_VALUES
from oss_sim.models import ServiceOrderCreate, ServiceOrderItemCreate
from oss_sim.state import OrderItem

ROAMING_DATA_BARRED_VALUES = ("true", "false")

REQUIRED_CHARACTERISTICS = {
    "add": ("msisdn", "productOfferingId", "customerId"),
    # modify: barring and/or roamingDataBarred (checked below)
    "modify": ("msisdn",),
    "delete": ("msisdn",),
}


def parse_items(body: ServiceOrderCreate) -> list[OrderItem]:
    seen_ids: set[str] = set()
    items = []
    for index, raw in enumerate(body.serviceOrderItem):
        where = f"serviceOrderItem[{index}]"
        if raw.id in seen_ids:
            raise SimError(400, "duplicateItemId", f"item id {raw.id!r} is used twice", field=f"{where}.id")
        seen_ids.add(raw.id)
        items.append(OrderItem(id=raw.id, action=raw.action, characteristics=_characteristics(raw, where)))
    return items


def _characteristics(raw: ServiceOrderItemCreate, where: str) -> dict[str, Any]:
    where = f"{where}.service.serviceCharacteristic"
    values: dict[str, Any] = {}
    for characteristic in raw.service.serviceCharacteristic:
        if characteristic.name in values:
            raise SimError(
                400, "duplicateCharacteristic", f"{characteristic.name!r} given twice", field=f"{where}.{characteristic.name}"
            )
        values[characteristic.name] = characteristic.value
    for name in REQUIRED_CHARACTERISTICS[raw.action]:
        value = values.get(name)
        if not isinstance(value, str) or not value:
            raise SimError(
                400,
                "missingCharacteristic",
                f"action {raw.action!r} needs characteristic {name!r} as a non-empty string",
                field=f"{where}.{name}",
            )
    if raw.action == "modify":
        _check_modify(values, where)
    return values


def _check_modify(values: dict[str, Any], where: str) -> None:
    """A modify changes the barring (none/outgoing/full), the roaming data barring ("true"/"false"), or both."""
    if "barring" not in values and "roamingDataBarred" not in values:
        raise SimError(400, "missingCharacteristic", "action 'modify' needs characteristic 'barring' or 'roamingDataBarred'",
                       field=f"{where}.barring")
    if "roamingDataBarred" in values and values["roamingDataBarred"] not in ROAMING_DATA_BARRED_VALUES:
        raise SimError(400, "invalidCharacteristic", "roamingDataBarred must be 'true' or 'false'", field=f"{where}.roamingDataBarred")
    if "barring" in values and values["barring"] not in BARRING_VALUES:
        raise SimError(
            400,
            "invalidCharacteristic",
            f"barring must be one of {', '.join(BARRING_VALUES)}",
            field=f"{where}.barring",
        )


def fingerprint(items: list[OrderItem]) -> str:
    """Identifies what was ordered, to tell an idempotent retry from a reused externalId."""
    return json.dumps([[item.id, item.action, item.characteristics] for item in items], sort_keys=True, default=str)
