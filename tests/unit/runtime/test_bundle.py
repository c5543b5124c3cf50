"""The OCI config of a sandbox (corral/runtime/bundle.py): what it asks of the kernel
for PTYs and for the agent's boundary."""

from __future__ import annotations

from typing import Any

import pytest

from corral.domain import Limits
from corral.runtime import bundle


def config(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "sandbox_id": "sb-test",
        "limits": Limits(),
        "envs": {},
        "agent_path": "/var/lib/corral/agent/agent.py",
        "uid_base": 100000,
        "uid_count": 65536,
        "pty_max": 256,
    }
    return bundle.oci_config(**{**args, **overrides})


def mount(cfg: dict[str, Any], destination: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [m for m in cfg["mounts"] if m["destination"] == destination]
    assert len(found) == 1, found
    return found[0]


def test_each_sandbox_has_a_devpts_instance_of_its_own_with_a_max() -> None:
    devpts = mount(config(pty_max=32), "/dev/pts")
    assert devpts["type"] == "devpts"
    assert devpts["options"] == [
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
        "gid=5",
        "max=32",
    ]


@pytest.mark.parametrize("pty_max", [0, -1])
def test_a_pty_max_under_one_is_refused(pty_max: int) -> None:
    with pytest.raises(ValueError, match="pty_max"):
        config(pty_max=pty_max)


def test_no_capability_opens_the_agent_to_its_commands() -> None:
    """The agent's shield holds only while no sandbox process has these (docs/security.md,
    "The agent boundary")."""
    caps = config()["process"]["capabilities"]
    opening = {"CAP_SYS_PTRACE", "CAP_SYS_RESOURCE", "CAP_SYS_ADMIN", "CAP_PERFMON", "CAP_CHECKPOINT_RESTORE"}
    for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        assert opening.isdisjoint(caps[kind]), kind
    assert config()["process"]["noNewPrivileges"] is True


def test_the_settings_default_is_what_the_bundle_gets() -> None:
    from corral.settings import Settings

    assert Settings().pty_max == 256  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="pty_max"):
        Settings(pty_max=0)  # type: ignore[call-arg]


def namespaces(cfg: dict[str, Any]) -> dict[str, str | None]:
    return {ns["type"]: ns.get("path") for ns in cfg["linux"]["namespaces"]}


def test_runc_makes_the_user_namespace_unless_given_one() -> None:
    made = config()
    assert namespaces(made)["user"] is None and namespaces(made)["network"] is None
    assert made["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 65536, "hard": 1048576}]


def test_a_host_made_user_namespace_is_joined_and_the_rlimits_are_inherited() -> None:
    """runc cannot prlimit(2) a process in a namespace it does not own (without
    CAP_SYS_RESOURCE): the sandbox inherits them from runc (``nofile_limits``)."""
    joined = config(userns_path="/proc/42/ns/user")
    assert namespaces(joined)["user"] == "/proc/42/ns/user"
    assert "network" in namespaces(joined) and namespaces(joined)["network"] is None
    assert joined["process"]["rlimits"] == []
    assert joined["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert bundle.nofile_limits(20000) == (20000, 20000)
    assert bundle.nofile_limits() == (65536, 1048576)


def test_with_a_host_made_user_namespace_the_network_namespace_is_inherited() -> None:
    """runc joins a user namespace first; from one host root does not own, it could not
    join the host-owned network namespace, so runc is started in it instead."""
    both = config(userns_path="/proc/42/ns/user", netns_path="/run/netns/x", sysfs_path="/s")
    assert "network" not in namespaces(both)
    alone = config(netns_path="/run/netns/x", sysfs_path="/s")
    assert namespaces(alone)["network"] == "/run/netns/x"
