"""Activity (corral.services.activity): last uses kept in memory, applied to rows read,
forgotten once written."""

from __future__ import annotations

from datetime import timedelta

from corral.domain import Limits, Sandbox, SandboxStatus
from corral.services.activity import Activity
from tests.support.clock import FakeClock


def _sandbox(clock: FakeClock, sandbox_id: str = "sb-a") -> Sandbox:
    now = clock.now()
    return Sandbox(
        id=sandbox_id,
        org_id="org-a",
        template="base",
        status=SandboxStatus.RUNNING,
        limits=Limits(1, 512, 1024, 256),
        envs={},
        metadata={},
        timeout_s=300,
        created_at=now,
        last_active_at=now,
    )


def test_a_use_is_applied_until_it_is_settled() -> None:
    clock = FakeClock()
    activity = Activity(clock)
    row = _sandbox(clock)
    assert activity.applied(row) is row  # nothing seen yet
    clock.advance(60)
    activity.touch("sb-a")
    assert activity.applied(row).last_active_at == row.last_active_at + timedelta(seconds=60)
    assert activity.settle(row).last_active_at == row.last_active_at + timedelta(seconds=60)
    assert activity.applied(row) is row and activity.forget("sb-a") is None


def test_drain_hands_over_every_use_once() -> None:
    clock = FakeClock()
    activity = Activity(clock)
    activity.touch("sb-a")
    activity.touch("sb-b")
    assert sorted(sid for sid, _ in activity.drain()) == ["sb-a", "sb-b"]
    assert activity.drain() == []
