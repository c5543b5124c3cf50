"""A code session's request: defaults filled, and every bad field named."""

from __future__ import annotations

from typing import Any

import pytest

from corral.domain import EgressMode
from corral.domain.sessions import LimitBounds, check_code, check_language, egress_of, limits_of
from corral.errors import InvalidInput

BOUNDS = LimitBounds(max_memory_mib=1024, max_cpus=2, max_pids=256, max_wall_clock_s=600)


def test_defaults_are_filled() -> None:
    limits = limits_of({}, BOUNDS)
    assert (limits.memory_mib, limits.wall_clock_s, limits.cpu_millicores, limits.pids) == (
        256,
        30,
        1000,
        128,
    )
    assert limits.cpu_seconds == 30.0  # the wall clock at one CPU
    assert limits_of({"cpus": 1.5}, BOUNDS).cpus == 2


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"memoryMiB": 4096}, "limits.memoryMiB"),
        ({"memoryMiB": "256"}, "limits.memoryMiB"),
        ({"memoryMiB": True}, "limits.memoryMiB"),
        ({"wallClockSeconds": 0}, "limits.wallClockSeconds"),
        ({"pids": 1}, "limits.pids"),
        ({"cpuMillicores": 9000}, "limits.cpuMillicores"),
        ({"cpuSeconds": -1}, "limits.cpuSeconds"),
        ({"gpus": 1}, "limits.gpus"),
    ],
)
def test_a_bad_limit_is_named(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        limits_of(raw, BOUNDS)
    assert caught.value.field == field


def test_egress_modes() -> None:
    assert egress_of(None, None).mode is EgressMode.DENY_ALL and egress_of(None, None).allow == ()
    allowed = egress_of("allowlist", ["10.1.0.0/16", "pypi.org"])
    assert allowed.mode is EgressMode.DENY_ALL and allowed.allow == ("10.1.0.0/16", "pypi.org")
    assert allowed.audit_allowed and egress_of("deny_all", []).audit_allowed  # egress_allowed events
    for mode, allow, field in [
        ("allow_all", [], "egress.mode"),
        ("deny_all", ["10.0.0.0/8"], "egress.allow"),
        ("allowlist", ["10.0.0.0/33"], "egress.allow"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            egress_of(mode, allow)
        assert caught.value.field == field


def test_code_and_language() -> None:
    for bad in ("", "   "):
        with pytest.raises(InvalidInput) as caught:
            check_code(bad)
        assert caught.value.field == "code"
    with pytest.raises(InvalidInput) as caught:
        check_language("ruby")
    assert caught.value.field == "language"
