"""A trip that is booked now and cancelled days later, from another process.

``python -m reactorpy.examples.booking book Lisbon`` books a flight, a hotel room with
breakfast (a composed reactor) and a car, and keeps the run's undo stack in
``booking.json``; ``python -m reactorpy.examples.booking cancel`` loads it in a new process
and undoes everything that was booked, newest first.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import reactorpy as rp

STATE = Path("booking.json")

stay = rp.Reactor("stay", inputs=["city"], returns="breakfast")


@stay.step
async def room(city: str) -> str:
    await asyncio.sleep(0.01)  # the hotel's API
    return f"RM-{city[:3].upper()}-12"


@room.undo
def release_room(reference: str) -> None:
    print(f"released room {reference}")


@stay.step
async def breakfast(room: str) -> str:
    return f"{room}+BF"


@breakfast.undo
def drop_breakfast(reference: str) -> None:
    print(f"dropped breakfast {reference}")


trip = rp.Reactor("trip", inputs=["city"])


@trip.step
async def flight(city: str) -> str:
    await asyncio.sleep(0.02)  # the airline's API
    return f"FL-{city[:3].upper()}-7"


@flight.undo
def cancel_flight(reference: str) -> None:
    print(f"cancelled flight {reference}")


trip.compose("hotel", stay)


@trip.step
async def car(city: str, flight: str) -> str:  # picked up when the flight lands
    return f"CAR-{city[:3].upper()}-{flight[-1]}"


@car.undo
def return_car(reference: str) -> None:
    print(f"returned car {reference}")


def main(argv: list[str]) -> int:
    """``book CITY`` books and saves the undo stack; ``cancel`` undoes it."""
    if argv[0] == "book":
        done = asyncio.run(trip.run_reversible({"city": argv[1]}))
        STATE.write_text(done.checkpoint.to_json())
        bookings: dict[str, Any] = done.result
        print(json.dumps(bookings, sort_keys=True))
        return 0
    checkpoint = rp.Checkpoint.from_json(STATE.read_text())
    asyncio.run(trip.undo(checkpoint))
    STATE.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
