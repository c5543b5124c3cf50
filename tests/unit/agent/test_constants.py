"""The agent (sandbox_agent.py: standalone, stdlib only, run inside the sandbox) keeps
its own copy of the wire's constants; they must be the host's (agent/wire.py)."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

from corral.agent import wire


def load_agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sandbox_agent_under_test", wire.AGENT_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines only: main() runs under __main__
    return module


def test_frame_types_and_sizes_agree() -> None:
    agent = load_agent()
    assert {name: getattr(agent, f"T_{name}") for name in wire.FrameType.__members__} == {
        name: member.value for name, member in wire.FrameType.__members__.items()
    }
    assert agent.MAX_PAYLOAD == wire.MAX_PAYLOAD
    assert agent.DATA_CHUNK <= wire.MAX_PAYLOAD and wire.DATA_CHUNK <= agent.MAX_PAYLOAD
    host_types = {wire.FrameType.STDIN, wire.FrameType.DATA, wire.FrameType.EOF, wire.FrameType.JSON}
    assert agent.HOST_TYPES == {int(t) for t in host_types}


def test_every_error_code_the_agent_answers_is_known_to_the_host() -> None:
    agent = load_agent()
    raised = set(re.findall(r'OpError\("([a-z_]+)"', wire.AGENT_FILE.read_text()))
    codes = set(agent.ERRNO_CODES.values()) | raised
    unknown = codes - set(wire._ERRORS) - {"io", "internal"}  # those two are AgentError
    assert raised and not unknown, unknown
