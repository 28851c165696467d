"""The simulator's service inventory: one service per MSISDN, changed by completed order items."""

from dataclasses import dataclass, field
from typing import Literal

from oss_sim.clock import utc_now_iso

ServiceState = Literal["inactive", "active", "terminated"]
Barring = Literal["none", "outgoing", "full"]
BARRING_VALUES: tuple[Barring, ...] = ("none", "outgoing", "full")


class ServiceChangeRefused(Exception):
    """The inventory cannot apply a change; `code` is the machine-readable reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class ServiceRecord:
    msisdn: str
    state: ServiceState = "inactive"
    barring: Barring = "none"
    # Roaming data barred (a roaming data cap's cut-off): beside `barring`, voice, SMS and domestic data go on.
    roaming_data_barred: bool = False
    product_offering_id: str | None = None
    customer_id: str | None = None
    history: list[dict[str, object]] = field(default_factory=list)

    def record(self, change: str, service_order_id: str) -> None:
        self.history.append(
            {
                "time": utc_now_iso(),
                "change": change,
                "serviceOrderId": service_order_id,
                "state": self.state,
                "barring": self.barring,
                "roamingDataBarred": self.roaming_data_barred,
            }
        )

    def to_json(self) -> dict[str, object]:
        return {
            "msisdn": self.msisdn,
            "state": self.state,
            "barring": self.barring,
            "roamingDataBarred": self.roaming_data_barred,
            "productOfferingId": self.product_offering_id,
            "customerId": self.customer_id,
            "history": list(self.history),
        }


@dataclass(frozen=True)
class AppliedChange:
    """What one completed order item did, so a later cancel can undo exactly that."""

    msisdn: str
    action: str
    previous_state: ServiceState
    previous_barring: Barring
    previous_roaming_data_barred: bool = False


class ServiceInventory:
    def __init__(self) -> None:
        self._services: dict[str, ServiceRecord] = {}

    def get(self, msisdn: str) -> ServiceRecord | None:
        return self._services.get(msisdn)

    def check_can_order(self, action: str, msisdn: str) -> None:
        """Refuse at submission what could never complete, as a real OSS validates orders."""
        service = self._services.get(msisdn)
        if action == "add":
            if service is not None and service.state == "active":
                raise ServiceChangeRefused("serviceAlreadyActive", f"service {msisdn} is already active")
            return
        if service is None:
            raise ServiceChangeRefused("unknownService", f"no service with msisdn {msisdn}")
        if action == "modify" and service.state != "active":
            raise ServiceChangeRefused("serviceNotActive", f"service {msisdn} is {service.state}")

    def note_ordered(self, msisdn: str, service_order_id: str, product_offering_id: str | None, customer_id: str | None) -> None:
        """An accepted activation makes the number known (inactive) until the order completes."""
        service = self._services.get(msisdn)
        if service is None or service.state == "terminated":
            service = self._services.setdefault(msisdn, ServiceRecord(msisdn=msisdn))
            service.state = "inactive"
            service.barring = "none"
            service.roaming_data_barred = False
        service.product_offering_id = product_offering_id
        service.customer_id = customer_id
        service.record("ordered", service_order_id)

    def activate(self, msisdn: str, service_order_id: str) -> AppliedChange:
        self.check_can_order("add", msisdn)
        service = self._services.setdefault(msisdn, ServiceRecord(msisdn=msisdn))
        change = AppliedChange(msisdn, "add", service.state, service.barring, service.roaming_data_barred)
        service.state = "active"
        service.barring = "none"
        service.roaming_data_barred = False
        service.record("activated", service_order_id)
        return change

    def set_barring(self, msisdn: str, barring: Barring, service_order_id: str) -> AppliedChange:
        return self.modify(msisdn, service_order_id, barring=barring)

    def modify(self, msisdn: str, service_order_id: str, *, barring: Barring | None = None,
               roaming_data_barred: bool | None = None) -> AppliedChange:
        """Changes the barring, the roaming data barring, or both; what is not given stays as it is."""
        self.check_can_order("modify", msisdn)
        service = self._services[msisdn]
        change = AppliedChange(msisdn, "modify", service.state, service.barring, service.roaming_data_barred)
        if barring is not None:
            service.barring = barring
            service.record(f"barring:{barring}", service_order_id)
        if roaming_data_barred is not None:
            service.roaming_data_barred = roaming_data_barred
            service.record(f"roamingDataBarred:{'true' if roaming_data_barred else 'false'}", service_order_id)
        return change

    def terminate(self, msisdn: str, service_order_id: str) -> AppliedChange:
        self.check_can_order("delete", msisdn)
        service = self._services[msisdn]
        change = AppliedChange(msisdn, "delete", service.state, service.barring, service.roaming_data_barred)
        # Terminating twice is harmless, so the second delete completes without a change.
        if service.state != "terminated":
            service.state = "terminated"
            service.record("terminated", service_order_id)
        return change

    def undo(self, change: AppliedChange, service_order_id: str) -> None:
        service = self._services[change.msisdn]
        if change.action == "add":
            service.state = "terminated"
        elif change.action == "modify":
            service.barring = change.previous_barring
            service.roaming_data_barred = change.previous_roaming_data_barred
        else:
            service.state = change.previous_state
        service.record(f"undone:{change.action}", service_order_id)

    def clear(self) -> None:
        self._services.clear()
