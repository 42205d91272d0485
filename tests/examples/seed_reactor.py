"""A fresh copy of the seed tutorial's reactor (DESIGN 1) for tests, without docstrings."""

from __future__ import annotations

import asyncio
from typing import Any

import reactorpy as rp


def seed() -> rp.Reactor:
    """The seed reactor: three sleeping fetches (0.20, 0.15, 0.30 s) and an aggregate."""
    r = rp.Reactor("async_user_data", inputs=["user_id"], returns="aggregate_data")

    @r.step
    async def fetch_profile(user_id: int) -> dict[str, Any]:
        await asyncio.sleep(0.20)
        return {"id": user_id}

    @r.step
    async def fetch_preferences(user_id: int) -> dict[str, Any]:
        await asyncio.sleep(0.15)
        return {"theme": "light"}

    @r.step
    async def fetch_activity(user_id: int) -> dict[str, Any]:
        await asyncio.sleep(0.30)
        return {"login_count": 42}

    @r.step
    def aggregate_data(
        fetch_profile: dict[str, Any],
        fetch_preferences: dict[str, Any],
        fetch_activity: dict[str, Any],
    ) -> dict[str, Any]:
        return {"summary": f"User {fetch_profile['id']} has {fetch_activity['login_count']}"}

    return r
