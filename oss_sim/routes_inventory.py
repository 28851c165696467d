"""TMF638 Service Inventory (read-only subset): one service per MSISDN, its state and barring, so o2c can
compare its view with the network's (the nightly OSS reconciliation)."""

from fastapi import APIRouter

from oss_sim.deps import StateDep
from oss_sim.errors import SimError
from oss_sim.inventory import ServiceRecord

TMF638_BASE_PATH = "/tmf-api/serviceInventory/v4"

router = APIRouter(prefix=TMF638_BASE_PATH, tags=["TMF638"])


def service_document(service: ServiceRecord) -> dict[str, object]:
    return {
        "id": service.msisdn,
        "href": f"{TMF638_BASE_PATH}/service/{service.msisdn}",
        "state": service.state,  # TMF638 ServiceStateType subset: inactive | active | terminated
        "serviceCharacteristic": [
            {"name": "msisdn", "valueType": "string", "value": service.msisdn},
            {"name": "barring", "valueType": "string", "value": service.barring},
            # Roaming data barred (a roaming data cap's cut-off) beside the barring; the service stays active.
            {"name": "roamingDataBarred", "valueType": "boolean", "value": service.roaming_data_barred},
        ],
        "@type": "Service",
    }


@router.get("/service/{msisdn}")
async def get_service(msisdn: str, state: StateDep) -> dict[str, object]:
    service = state.inventory.get(msisdn)
    if service is None:
        raise SimError(404, "notFound", f"no service with msisdn {msisdn!r}")
    return service_document(service)
