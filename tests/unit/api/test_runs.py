"""The agent-runs surface (corral/api/runs, spec 004) in-process over the process
runtime, with the fake Messages API (tests/support/fake_anthropic.py) as the model: its
envelope and codes, bad input naming the field, the rate-limit headers, 404 across orgs,
the run token's reach, a run whose desktop cannot be provisioned (no ``gui`` template
here), and the 503 without a model key. The desktop itself is tested on runc in
tests/runs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from corral.core import Core
from corral.ids import new_id
from tests.support.app import KEY, kill_all, make_app, make_settings
from tests.support.conditions import eventually_async
from tests.support.fake_anthropic import FakeMessagesApi

pytestmark = pytest.mark.asyncio(loop_scope="module")
MODEL_KEY = "sk-ant-test-" + "m" * 24


@dataclass
class Surface:
    app: FastAPI
    client: httpx.AsyncClient
    rival: str  # an owner key of another org
    viewer: str  # a viewer key of the first org

    @property
    def core(self) -> Core:
        core: Core = self.app.state.core
        return core

    def as_key(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def model() -> Iterator[FakeMessagesApi]:
    fake = FakeMessagesApi(key=MODEL_KEY).start()
    yield fake
    fake.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def surface(tmp_path_factory: pytest.TempPathFactory, model: FakeMessagesApi) -> AsyncIterator[Surface]:
    settings = make_settings(
        tmp_path_factory.mktemp("runs"), anthropic_api_key=MODEL_KEY, anthropic_base_url=model.url
    )
    app = make_app(settings)
    async with app.router.lifespan_context(app):
        core: Core = app.state.core
        org = (await core.auth.keys.org_by_name("default")).id
        viewer = (await core.auth.create_key(org, "viewer", "viewer")).raw
        rival_org = await core.auth.keys.add_org(new_id("org"), "rival")
        rival = (await core.auth.create_key(rival_org.id, "owner", "rival")).raw
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://corral.test", headers={"Authorization": f"Bearer {KEY}"}
        ) as client:
            yield Surface(app, client, rival, viewer)
            await kill_all(core)


def error_of(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == code, error
    assert error["requestId"] == answer.headers["x-request-id"] and len(error["requestId"]) == 36
    assert error["message"] and "hint" in error
    return error


async def new_thread(s: Surface, prompt: str = "open a terminal") -> str:
    created = await s.client.post("/api/sessions", json={"prompt": prompt})
    assert created.status_code == 201, created.text
    return str(created.json()["threadId"])


async def ended(s: Surface, thread: str, run: str) -> dict[str, Any]:
    async def done() -> bool:
        answer = await s.client.get(f"/api/sessions/{thread}/runs/{run}")
        return bool(answer.json()["isCompleted"])

    await eventually_async(done, 30, f"run {run} did not end")
    answer = await s.client.get(f"/api/sessions/{thread}/runs/{run}")
    body: dict[str, Any] = answer.json()
    return body


async def test_a_session_holds_its_prompts_and_first_message(surface: Surface) -> None:
    body = {
        "prompts": {"userPrompt": "hello", "goalPrompt": "a file on the desktop", "systemPrompt": "be brief"}
    }
    created = await surface.client.post("/api/sessions", json=body)
    assert created.status_code == 201, created.text
    ids = created.json()
    thread = (await surface.client.get(f"/api/sessions/{ids['threadId']}")).json()["thread"]
    assert thread["id"] == ids["threadId"]
    assert thread["prompts"] == {
        "userPrompt": "hello",
        "goalPrompt": "a file on the desktop",
        "systemPrompt": "be brief",
    }
    [first] = thread["messages"]
    assert (first["id"], first["role"], first["content"], first["runId"]) == (
        ids["messageId"],
        "user",
        "hello",
        None,
    )
    assert thread["metadata"] == {"sandboxId": None, "vncUrl": None, "sandboxStatus": None}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "a", "prompts": {"userPrompt": "b"}}, "prompt"),
        ({"prompts": {"userPrompt": ""}}, "prompts.userPrompt"),
        ({"prompts": {"userPrompt": "x", "goalPrompt": ""}}, "prompts.goalPrompt"),
        ({"prompts": {}}, "prompts.userPrompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x", "template": "base"}, "template"),
        ({"prompt": "x", "duration": 5}, "duration"),
        ({"prompt": "x", "duration": "900"}, "duration"),
    ],
)
async def test_a_bad_create_is_a_400_naming_the_field(
    surface: Surface, body: dict[str, Any], field: str
) -> None:
    error = error_of(await surface.client.post("/api/sessions", json=body), 400, "INVALID_FIELD")
    assert error["field"] == field, error


async def test_a_body_that_is_not_json_is_invalid_request(surface: Surface) -> None:
    answer = await surface.client.post(
        "/api/sessions", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    error_of(answer, 400, "INVALID_REQUEST")
    error_of(await surface.client.post("/api/sessions", json=[1]), 400, "INVALID_REQUEST")


async def test_an_empty_message_unknown_thread_or_run(surface: Surface) -> None:
    thread = await new_thread(surface)
    error = error_of(
        await surface.client.post(f"/api/sessions/{thread}/runs", json={"message": ""}), 400, "INVALID_FIELD"
    )
    assert error["field"] == "message"
    error = error_of(await surface.client.post(f"/api/sessions/{thread}/runs", json={}), 400, "INVALID_FIELD")
    assert error["field"] == "message"
    unknown = "0b3f7c9e-1111-4222-8333-944455556666"
    error_of(await surface.client.get(f"/api/sessions/{unknown}"), 404, "RESOURCE_NOT_FOUND")
    error_of(await surface.client.get("/api/sessions/not-a-uuid"), 404, "RESOURCE_NOT_FOUND")
    error_of(
        await surface.client.post(f"/api/sessions/{unknown}/runs", json={"message": "go"}),
        404,
        "RESOURCE_NOT_FOUND",
    )
    error_of(
        await surface.client.get(f"/api/sessions/{thread}/runs/run_{'a' * 24}"), 404, "RESOURCE_NOT_FOUND"
    )
    error_of(await surface.client.get(f"/api/sessions/{thread}/runs/nope"), 404, "RESOURCE_NOT_FOUND")
    error_of(
        await surface.client.post("/api/sandbox/extend", json={"sandboxId": "sb-nope"}),
        404,
        "RESOURCE_NOT_FOUND",
    )
    error = error_of(await surface.client.post("/api/sandbox/extend", json={}), 400, "INVALID_FIELD")
    assert error["field"] == "sandboxId"
    error_of(await surface.client.get("/api/sessions/x/y/z"), 404, "RESOURCE_NOT_FOUND")
    wrong = error_of(await surface.client.delete(f"/api/sessions/{thread}"), 405, "INVALID_REQUEST")
    assert "GET" in wrong["message"]


async def test_credentials(surface: Surface) -> None:
    bare = httpx.AsyncClient(transport=surface.client._transport, base_url="http://corral.test")
    async with bare:
        error_of(await bare.post("/api/sessions", json={"prompt": "x"}), 401, "UNAUTHORIZED")
        wrong = {"Authorization": "Bearer ek_nobody00_" + "x" * 32}
        error_of(
            await bare.post("/api/sessions", json={"prompt": "x"}, headers=wrong), 401, "INVALID_API_KEY"
        )
        viewer = surface.as_key(surface.viewer)
        error_of(await bare.post("/api/sessions", json={"prompt": "x"}, headers=viewer), 403, "FORBIDDEN")
        thread = await new_thread(surface)
        assert (await bare.get(f"/api/sessions/{thread}", headers=viewer)).status_code == 200


async def test_every_answer_says_the_requests_left(surface: Surface) -> None:
    first = await surface.client.post("/api/sessions", json={"prompt": "x"})
    second = await surface.client.post("/api/sessions", json={"prompt": ""})
    limit = int(first.headers["x-ratelimit-limit"])
    assert limit == 60
    assert int(second.headers["x-ratelimit-remaining"]) < int(first.headers["x-ratelimit-remaining"])
    org = (await surface.core.auth.keys.org_by_name("default")).id
    key = (await surface.core.auth.create_key(org, "developer", "burst")).raw
    answers = [
        await surface.client.get("/api/sessions/nope", headers=surface.as_key(key)) for _ in range(limit + 1)
    ]
    assert [a.status_code for a in answers[:limit]] == [404] * limit
    assert int(answers[limit - 1].headers["x-ratelimit-remaining"]) == 0
    error_of(answers[limit], 429, "RATE_LIMITED")
    assert int(answers[limit].headers["retry-after"]) >= 1


async def test_a_run_without_a_desktop_fails_saying_so_and_its_token_only_reads_it(
    surface: Surface, model: FakeMessagesApi
) -> None:
    thread = await new_thread(surface)
    started = await surface.client.post(f"/api/sessions/{thread}/runs", json={"message": "save the date"})
    assert started.status_code == 201, started.text
    body = started.json()
    run, token = body["runId"], body["publicAccessToken"]
    assert body["threadId"] == thread and run.startswith("run_") and token.startswith("pat_")
    done = await ended(surface, thread, run)
    assert (done["status"], done["isCompleted"], done["isErrored"]) == ("FAILED", True, True)
    assert "desktop could not be provisioned" in done["error"]
    assert done["metadata"]["sandboxStatus"] == "failed"
    mirrored = (await surface.client.get(f"/api/sessions/{thread}")).json()["thread"]
    assert mirrored["metadata"]["sandboxStatus"] == "failed"
    assert [m["role"] for m in mirrored["messages"]] == ["user", "user"]
    assert mirrored["messages"][1]["runId"] == run

    bare = httpx.AsyncClient(transport=surface.client._transport, base_url="http://corral.test")
    async with bare:
        by_token = await bare.get(
            f"/api/sessions/{thread}/runs/{run}", headers={"Authorization": f"Bearer {token}"}
        )
        assert by_token.status_code == 200 and by_token.json()["status"] == "FAILED"
        assert "x-ratelimit-remaining" in by_token.headers
        stream = await bare.get(f"/api/sessions/{thread}/runs/{run}/stream?token={token}")
        assert stream.status_code == 200, stream.text
        events = [
            line.split(": ", 1)[1].strip() for line in stream.text.splitlines() if line.startswith("event:")
        ]
        assert events[0] == "status" and events[-1] == "done" and "desktop" in events
        data = [
            json.loads(line.split(": ", 1)[1])
            for line in stream.text.splitlines()
            if line.startswith("data:")
        ]
        assert data[-1]["status"] == "FAILED" and data[-1]["isErrored"] is True
        # the token reads that run only: no thread, no other run, no writes
        other = await surface.client.post(f"/api/sessions/{thread}/runs", json={"message": "again"})
        other_run = other.json()["runId"]
        header = {"Authorization": f"Bearer {token}"}
        error_of(
            await bare.get(f"/api/sessions/{thread}/runs/{other_run}", headers=header),
            404,
            "RESOURCE_NOT_FOUND",
        )
        error_of(await bare.get(f"/api/sessions/{thread}", headers=header), 401, "INVALID_API_KEY")
        error_of(
            await bare.post(f"/api/sessions/{thread}/runs", json={"message": "x"}, headers=header),
            401,
            "INVALID_API_KEY",
        )
        error_of(
            await bare.post(f"/api/sessions/{thread}/runs/{run}/cancel", headers=header),
            401,
            "INVALID_API_KEY",
        )
        forged = {"Authorization": f"Bearer pat_{'x' * 43}"}
        error_of(
            await bare.get(f"/api/sessions/{thread}/runs/{run}", headers=forged), 404, "RESOURCE_NOT_FOUND"
        )
        await ended(surface, thread, other_run)


async def test_another_orgs_thread_and_run_are_404(surface: Surface) -> None:
    thread = await new_thread(surface)
    run = (await surface.client.post(f"/api/sessions/{thread}/runs", json={"message": "go"})).json()["runId"]
    rival = surface.as_key(surface.rival)
    error_of(await surface.client.get(f"/api/sessions/{thread}", headers=rival), 404, "RESOURCE_NOT_FOUND")
    error_of(
        await surface.client.get(f"/api/sessions/{thread}/runs/{run}", headers=rival),
        404,
        "RESOURCE_NOT_FOUND",
    )
    answer = await surface.client.post(f"/api/sessions/{thread}/runs", json={"message": "x"}, headers=rival)
    error_of(answer, 404, "RESOURCE_NOT_FOUND")
    error_of(
        await surface.client.post(f"/api/sessions/{thread}/runs/{run}/cancel", headers=rival),
        404,
        "RESOURCE_NOT_FOUND",
    )
    await ended(surface, thread, run)


async def test_without_a_model_key_creates_are_503_saying_what_to_set(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    app = make_app(make_settings(tmp_path_factory.mktemp("runs-nokey")))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://corral.test", headers={"Authorization": f"Bearer {KEY}"}
        ) as client:
            error = error_of(
                await client.post("/api/sessions", json={"prompt": "x"}), 503, "SERVICE_UNAVAILABLE"
            )
            assert "CORRAL_ANTHROPIC_API_KEY" in error["message"] + error["hint"]
