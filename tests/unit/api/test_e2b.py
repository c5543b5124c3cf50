"""The E2B surface's pieces that need no sandbox: which requests are its, pids, users,
watch events, Connect codes. The SDK's whole flow runs in tests/e2b."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from connectrpc.code import Code
from connectrpc.codec import proto_json_codec
from connectrpc.errors import ConnectError
from e2b.envd.filesystem import filesystem_pb

from corral.api.e2b import errors
from corral.api.e2b.app import claims
from corral.api.e2b.caller import DEFAULT, ROOT, basic_user, user_named
from corral.api.e2b.errors import CODES, CheckedCodec, connect_error
from corral.api.e2b.filesystem import _event
from corral.api.e2b.process import pid_of
from corral.domain import FileChange
from corral.errors import CorralError, InvalidInput, NotFound


def scope(path: str, *headers: tuple[str, str], kind: str = "http") -> dict[str, Any]:
    return {"type": kind, "path": path, "headers": [(n.encode(), v.encode()) for n, v in headers]}


@pytest.mark.parametrize(
    ("request_scope", "claimed"),
    [
        (scope("/v2/sandboxes", ("x-api-key", "ek_a_b")), True),
        (scope("/sandboxes/sb-12345678", ("x-api-key", "ek_a_b")), True),
        # OpenComputer's worker routes share the path, with a Bearer token
        (scope("/sandboxes/sb-12345678", ("authorization", "Bearer t"), ("x-api-key", "ek_a_b")), False),
        (scope("/sandboxes/sb-12345678", ("authorization", "Bearer t")), False),
        (scope("/api/sandboxes", ("x-api-key", "ek_a_b")), False),
        (scope("/sandboxes/sb-12345678/pause", ("x-api-key", "ek_a_b")), True),
        (scope("/sandboxes/sb-12345678/timeout", ("x-api-key", "ek_a_b")), True),
        (scope("/v2/sandboxes/sb-12345678/logs", ("x-api-key", "ek_a_b")), True),
        # OpenComputer's other worker routes, whatever credential they carry
        (scope("/sandboxes/sb-12345678/ports", ("x-api-key", "ek_a_b")), False),
        (scope("/sandboxes/sb-12345678/exec/run", ("x-api-key", "ek_a_b")), False),
        (scope("/sandboxes/sb-12345678/files", ("x-api-key", "ek_a_b")), False),
        # a worker token in X-API-Key (OpenComputer's SDK's PTY), or none: OpenComputer's
        (scope("/sandboxes/sb-12345678", ("x-api-key", "eyJ.a.b")), False),
        (scope("/sandboxes/sb-12345678", ("x-api-key", "")), False),
        (scope("/process.Process/Start", ("e2b-sandbox-id", "sb-12345678")), True),
        (scope("/anything", ("e2b-sandbox-id", "sb-12345678"), ("e2b-sandbox-port", "8000")), True),
        (scope("/filesystem.Filesystem/Stat", ("x-access-token", "t")), True),  # 2.20's connect
        (scope("/healthz", ("x-access-token", "t")), False),
        (scope("/", ("e2b-sandbox-id", "sb-12345678"), kind="websocket"), True),
        (scope("/", kind="lifespan"), False),
    ],
)
def test_which_requests_are_the_surfaces(request_scope: dict[str, Any], claimed: bool) -> None:
    assert claims(request_scope) is claimed


def test_a_pid_is_stable_and_in_range() -> None:
    pids = {pid_of(f"es-{n:016x}") for n in range(2000)}
    assert len(pids) == 2000 and all(1 <= p < 2**31 for p in pids)
    assert pid_of("es-abc") == pid_of("es-abc")


def test_users_and_their_paths() -> None:
    assert user_named(None) is DEFAULT and user_named("user") is DEFAULT and user_named("root") is ROOT
    with pytest.raises(InvalidInput) as bad:
        user_named("nobody")
    assert bad.value.field == "username"
    assert DEFAULT.path("a/../b.txt") == "/home/sandbox/b.txt" and ROOT.path("/etc/x") == "/etc/x"
    assert DEFAULT.run_as == "1000" and ROOT.run_as == "root"
    with pytest.raises(InvalidInput):
        DEFAULT.path("")
    basic = "Basic " + base64.b64encode(b"root:").decode()
    assert basic_user(basic) == "root" and basic_user("Bearer x") is None
    with pytest.raises(InvalidInput):
        basic_user("Basic !!!")


def test_watch_events_relative_and_filtered() -> None:
    created = _event("/w", FileChange("/w/a.txt", "created"), recursive=False)
    assert created is not None and (created.name, created.type) == ("a.txt", filesystem_pb.EventType.CREATE)
    assert _event("/w", FileChange("/w/d/a.txt", "modified"), recursive=False) is None
    deep = _event("/w", FileChange("/w/d/a.txt", "deleted"), recursive=True)
    assert deep is not None and (deep.name, deep.type) == ("d/a.txt", filesystem_pb.EventType.REMOVE)
    assert _event("/w", FileChange("/w", "modified"), recursive=True) is None


def test_the_envelope_names_e2bs_fields() -> None:
    bad = InvalidInput("invalid variable name '1BAD'", field="envs")
    answer = errors.answer(bad)
    assert answer.status_code == 400
    assert json.loads(bytes(answer.body)) == {"code": 400, "message": "envVars: invalid variable name '1BAD'"}
    assert bad.field == "envs"  # the error itself is left as it was raised
    hidden = errors.answer(CorralError("a secret detail"))
    assert json.loads(bytes(hidden.body)) == {"code": 500, "message": "internal error"}


def test_errors_become_connect_codes() -> None:
    assert connect_error(NotFound("gone")).code is Code.NOT_FOUND
    assert connect_error(InvalidInput("is required", field="path")).message == "path: is required"
    hidden = connect_error(RuntimeError("a secret detail"))
    assert (hidden.code, hidden.message) == (Code.INTERNAL, "internal error")
    assert len({code for _, code in CODES}) >= 7
    codec = CheckedCodec(proto_json_codec())
    with pytest.raises(ConnectError) as garbled:
        codec.decode(b"{not json", filesystem_pb.StatRequest)
    assert garbled.value.code is Code.INVALID_ARGUMENT and "StatRequest" in garbled.value.message
    assert codec.decode(b'{"path": "/x"}', filesystem_pb.StatRequest).path == "/x"
