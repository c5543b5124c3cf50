"""GET /api/sandboxes?limit=&cursor=: corral's paging of the OpenComputer list (the
spec lists all, and still does without ``limit``)."""

from __future__ import annotations

from pathlib import Path

from tests.unit.api.harness import new_key, serving


async def test_pages_follow_the_cursor_in_creation_order(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, client):
        made = [(await client.post("/api/sandboxes", json={})).json()["sandboxID"] for _ in range(5)]
        await client.delete(f"/api/sandboxes/{made[1]}")  # a stopped one is in no page
        live = [made[0], *made[2:]]
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, str | int] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = await client.get("/api/sandboxes", params=params)
            assert page.status_code == 200 and len(page.json()) <= 2
            seen += [sb["sandboxID"] for sb in page.json()]
            pages += 1
            cursor = page.headers.get("X-Next-Cursor")
            if cursor is None:
                break
        assert seen == live and pages == 3  # 2 + 2, then an empty page: a full page may have more
        everything = await client.get("/api/sandboxes")
        assert [sb["sandboxID"] for sb in everything.json()] == live
        assert "X-Next-Cursor" not in everything.headers


async def test_a_bad_limit_or_cursor_is_400_naming_it(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, client):
        sid = (await client.post("/api/sandboxes", json={})).json()["sandboxID"]
        for params, name in (
            ({"limit": 0}, "limit"),
            ({"limit": 1001}, "limit"),
            ({"cursor": "sb-nope"}, "cursor"),
        ):
            answer = await client.get("/api/sandboxes", params=params)
            assert answer.status_code == 400 and name in answer.json()["error"], answer.text
        rival = {"X-API-Key": await new_key(app, "owner", "rival")}
        other = await client.get("/api/sandboxes", params={"cursor": sid}, headers=rival)
        assert other.status_code == 400 and "cursor" in other.json()["error"]  # not the rival's
