"""Egress policy parsing and the compiled rules."""

from __future__ import annotations

import pytest

from corral.domain import EgressMode, EgressPolicy
from corral.domain.egress import (
    MAX_ENTRIES,
    parse_policy,
    policy_from_mapping,
    policy_to_mapping,
    validate_policy,
)
from corral.errors import InvalidInput
from corral.network.policy import Rules


def test_entries_are_normalised() -> None:
    policy = parse_policy(
        "DENY_ALL", [" Example.COM. ", "10.1.2.3", "10.0.0.7/8", "*.PyPI.org", "bücher.de", "::1", "*"]
    )
    assert policy.mode is EgressMode.DENY_ALL
    assert policy.allow == (
        "example.com",
        "10.1.2.3/32",
        "10.0.0.0/8",
        "*.pypi.org",
        "xn--bcher-kva.de",
        "::1/128",
        "*",
    )
    assert validate_policy(policy) == policy


def test_mode_defaults() -> None:
    assert parse_policy().mode is EgressMode.ALLOW_ALL
    assert parse_policy(None, ["a.com"]).mode is EgressMode.DENY_ALL
    assert parse_policy(None, None, ["a.com"]).mode is EgressMode.ALLOW_ALL


@pytest.mark.parametrize(
    ("allow", "message"),
    [
        (["ok.com", "10.0.0.0/33"], r"egress.allow\[1\]: '10.0.0.0/33' is not a valid CIDR"),
        (["300.1.1.1"], r"egress.allow\[0\]: '300.1.1.1' is not a valid CIDR"),
        (["  "], r"egress.allow\[0\]: empty entry"),
        (["exa mple.com"], r"egress.allow\[0\]: 'exa mple.com' is not a CIDR, hostname or \*.domain"),
        (["https://x.com"], r"is not a valid CIDR"),
        (["x.com:443"], r"is not a valid CIDR"),
        (["a.*.com"], r"is not a CIDR, hostname"),
        (["*."], r"is not a CIDR, hostname"),
        (["-a.com"], r"is not a CIDR, hostname"),
        ([7], r"egress.allow\[0\]: 7 is not a string"),
    ],
)
def test_bad_entries_are_named(allow: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        parse_policy("deny_all", allow)
    assert caught.value.field == "egress.allow"


def test_bad_mode_and_shapes() -> None:
    with pytest.raises(InvalidInput, match="egress.mode: unknown mode 'open'") as caught:
        parse_policy("open")
    assert caught.value.field == "egress.mode"
    with pytest.raises(InvalidInput, match="must be a list"):
        parse_policy("deny_all", "a.com")
    with pytest.raises(InvalidInput, match=r"egress.deny\[0\]"):
        validate_policy(EgressPolicy(deny=("",)))
    with pytest.raises(InvalidInput, match="at most"):
        parse_policy("deny_all", [f"h{i}.com" for i in range(MAX_ENTRIES + 1)])
    with pytest.raises(InvalidInput, match="unknown field 'ports'"):
        policy_from_mapping({"mode": "deny_all", "ports": []})


def test_mapping_round_trip() -> None:
    policy = parse_policy("deny_all", ["a.com"], ["1.2.3.4"])
    assert policy_from_mapping(policy_to_mapping(policy)) == policy


def test_name_matching() -> None:
    rules = Rules.compile(parse_policy("deny_all", ["pypi.org", "*.github.com"], ["evil.github.com"]))
    assert rules.name_allowed("pypi.org")
    assert not rules.name_allowed("files.pypi.org")
    assert rules.name_allowed("api.github.com") and rules.name_allowed("a.b.github.com")
    assert not rules.name_allowed("github.com"), "*.x does not match x"
    assert not rules.name_allowed("evil.github.com"), "deny wins"
    assert not rules.name_allowed("notgithub.com")
    assert rules.pins_answers and not rules.blocks_answers
    open_rules = Rules.compile(parse_policy("allow_all", None, ["*.ads.net", "10.0.0.0/8", "fd00::/8"]))
    assert open_rules.name_allowed("anything.org") and not open_rules.name_allowed("x.ads.net")
    assert open_rules.blocks_answers and not open_rules.pins_answers
    assert [str(n) for n in open_rules.deny_nets] == ["10.0.0.0/8"], "IPv6 entries open nothing"


def test_star_allows_every_name() -> None:
    rules = Rules.compile(parse_policy("deny_all", ["*"]))
    assert rules.name_allowed("whatever.example")
