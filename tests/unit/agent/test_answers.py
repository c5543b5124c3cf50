"""The agent's answers (agent/answers.py) are validated strictly: a wrong type, a
missing field, a value out of range is AgentError naming the field, never a crash."""

from __future__ import annotations

from typing import Any

import pytest

from corral.agent.answers import Answer, Executed, Listing, OneSession, Opened, Ports, Stat, parse
from corral.errors import AgentError

SESSION = {
    "id": "s",
    "cmd": "sh",
    "args": ["-c", "true"],
    "running": False,
    "exitCode": 0,
    "startedAt": 1.5,
    "attachedClients": 0,
    "pty": False,
}
ENTRY = {
    "name": "a",
    "path": "/a",
    "isDir": False,
    "size": 1,
    "mode": 0o644,
    "mtime": 2.0,
    "isSymlink": False,
}


def test_good_answers_parse_and_unknown_fields_are_ignored() -> None:
    info = parse(OneSession, {"ok": True, "session": {**SESSION, "new": 1}}).session.info()
    assert info.args == ("-c", "true") and info.started_at.timestamp() == 1.5 and info.exit_code == 0
    done = parse(Executed, {"ok": True, "timedOut": False, "exitCode": 3})
    assert (done.exit_code, done.truncated) == (3, False)
    assert parse(Stat, {"ok": True, "entry": None}).entry is None
    assert parse(Listing, {"ok": True, "entries": [ENTRY]}).entries[0].entry().mode == 0o644
    assert parse(Ports, {"ok": True, "ports": [80, 65535]}).ports == [80, 65535]


@pytest.mark.parametrize(
    ("model", "answer", "field"),
    [
        (Executed, {"timedOut": False, "exitCode": True}, "exitCode"),
        (Executed, {"timedOut": "no", "exitCode": 0}, "timedOut"),
        (Executed, {"timedOut": False, "exitCode": 1.0}, "exitCode"),
        (Executed, {"timedOut": False}, "exitCode"),
        (Executed, {"timedOut": False, "exitCode": 0, "truncated": 1}, "truncated"),
        (Opened, {"size": 1, "length": -1}, "length"),
        (Opened, {"size": "1"}, "size"),
        (OneSession, {"session": {**SESSION, "startedAt": 1e300}}, "session.startedAt"),
        (OneSession, {"session": {**SESSION, "startedAt": float("nan")}}, "session.startedAt"),
        (OneSession, {"session": {**SESSION, "args": [1]}}, "session.args.0"),
        (OneSession, {"session": [SESSION]}, "session"),
        (Listing, {"entries": [{**ENTRY, "size": None}]}, "entries.0.size"),
        (Listing, {"entries": [ENTRY], "next": 5}, "next"),
        (Ports, {"ports": [0]}, "ports.0"),
        (Ports, {"ports": [70000]}, "ports.0"),
        (Ports, {"ports": [2**200]}, "ports.0"),
        (Ports, {"ports": "80"}, "ports"),
    ],
)
def test_bad_answers_are_agent_errors_naming_the_field(
    model: type[Answer], answer: dict[str, Any], field: str
) -> None:
    with pytest.raises(AgentError, match=f"^agent answer: {field}: "):
        parse(model, {"ok": True, **answer})
