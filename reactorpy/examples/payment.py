"""A payment saga: reserve stock, charge the card, ship; undo what was done on failure.

Run it with ``python -m reactorpy.examples.payment``: the first order ships, the second
has its card declined, so nothing is charged and its stock is released.
"""

from __future__ import annotations

import asyncio

import reactorpy as rp

checkout = rp.Reactor("checkout", inputs=["order"], returns="ship")

LEDGER: list[str] = []


class CardDeclined(Exception):
    """The bank said no."""


@checkout.step
async def reserve_stock(order: dict[str, object]) -> str:
    """Hold the items in the warehouse."""
    await asyncio.sleep(0.01)
    LEDGER.append(f"reserved {order['sku']}")
    return f"hold-{order['id']}"


@reserve_stock.undo
async def release_stock(hold: str, order: dict[str, object]) -> None:
    LEDGER.append(f"released {order['sku']} ({hold})")


@checkout.step(retries=2, retry_on=ConnectionError, backoff=0.05)
async def charge_card(order: dict[str, object], reserve_stock: str) -> str:
    """Take the money; a flaky network is retried, a declined card is not."""
    await asyncio.sleep(0.01)
    if order["card"] == "declined":
        raise CardDeclined(f"card for order {order['id']} was declined")
    LEDGER.append(f"charged {order['amount']}")
    return f"charge-{order['id']}"


@charge_card.undo
async def refund(charge: str, order: dict[str, object]) -> None:
    LEDGER.append(f"refunded {order['amount']} ({charge})")


@checkout.step
async def ship(order: dict[str, object], charge_card: str) -> str:
    """Hand the parcel to the carrier."""
    await asyncio.sleep(0.01)
    return f"shipped order {order['id']}"


async def main() -> None:
    print(await checkout.run({"order": {"id": 1, "sku": "mug", "card": "ok", "amount": 12}}))
    try:
        await checkout.run({"order": {"id": 2, "sku": "tea", "card": "declined", "amount": 7}})
    except* CardDeclined as failed:
        print("failed:", failed.exceptions[0])
    print("ledger:", LEDGER)


if __name__ == "__main__":
    asyncio.run(main())
