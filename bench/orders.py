"""Submits N orders to a running o2c (`make up`) and measures throughput and order-to-activation latency.

Usage: .venv/bin/python bench/orders.py [--orders 200] [--concurrency 20] [--api http://127.0.0.1:8000]
Prints progress, then one final JSON line: orders_per_s, p50/p99 latency (s), and the completed ratio."""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

import httpx

ORDER = "/tmf-api/productOrderingManagement/v4/productOrder"


async def one_order(api: httpx.AsyncClient, customer_id: str, account_id: str, timeout_s: float) -> tuple[str, float]:
    started = time.monotonic()
    body = {"relatedParty": [{"id": customer_id, "role": "customer"}], "billingAccount": {"id": account_id},
            "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "mobile-s"}}]}
    response = await api.post(ORDER, json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
    response.raise_for_status()
    order_id = response.json()["id"]
    while time.monotonic() - started < timeout_s:
        state = (await api.get(f"{ORDER}/{order_id}")).json()["state"]
        if state in ("completed", "failed", "cancelled"):
            return state, time.monotonic() - started
        await asyncio.sleep(0.25)  # a CRM polling harder would mostly measure the API serving GETs
    return "timeout", time.monotonic() - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default="dev-admin-key")
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    async with httpx.AsyncClient(base_url=args.api, headers={"X-API-Key": args.api_key}, timeout=60) as api:
        customer = (await api.post("/tmf-api/customerManagement/v4/customer", json={"name": "Bench"})).json()
        account = (await api.post("/tmf-api/accountManagement/v4/billingAccount", json={
            "name": "Bench", "relatedParty": [{"id": customer["id"], "role": "customer"}]})).json()
        limit = asyncio.Semaphore(args.concurrency)

        async def bounded() -> tuple[str, float]:
            async with limit:
                return await one_order(api, customer["id"], account["id"], args.timeout)

        started = time.monotonic()
        results = await asyncio.gather(*(bounded() for _ in range(args.orders)))
        elapsed = time.monotonic() - started
    latencies = sorted(latency for state, latency in results if state == "completed")
    completed = len(latencies)
    print(f"{completed}/{args.orders} orders completed in {elapsed:.1f} s")
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else latencies * 99
    print(json.dumps({
        "orders": args.orders, "concurrency": args.concurrency,
        "orders_per_s": round(completed / elapsed, 2),
        "p50_activation_s": round(statistics.median(latencies), 3) if latencies else None,
        "p99_activation_s": round(quantiles[98], 3) if latencies else None,
        "completed_ratio": round(completed / args.orders, 4),
    }))


if __name__ == "__main__":
    asyncio.run(main())
