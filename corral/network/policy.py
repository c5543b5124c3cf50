"""Egress policies compiled for enforcement: what the firewall and the resolver match
against. Parsing and validation are domain logic (``corral.domain.egress``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from corral.domain import EgressMode, EgressPolicy
from corral.domain.egress import validate_policy


@dataclass(frozen=True)
class Rules:
    """A policy compiled for enforcement. Only IPv4 networks are kept (there is no
    IPv6 egress). Name matching is for the resolver; networks are for nftables."""

    mode: EgressMode
    allow_nets: tuple[ipaddress.IPv4Network, ...]
    deny_nets: tuple[ipaddress.IPv4Network, ...]
    allow_names: frozenset[str]
    allow_suffixes: tuple[str, ...]  # ".example.com" for "*.example.com"
    allow_any_name: bool
    deny_names: frozenset[str]
    deny_suffixes: tuple[str, ...]
    deny_any_name: bool
    audit_allowed: bool = False  # new connections let through are logged (firewall: ``allowed``)

    @classmethod
    def compile(cls, policy: EgressPolicy) -> Rules:
        policy = validate_policy(policy)
        allow = _split(policy.allow)
        deny = _split(policy.deny)
        return cls(
            mode=policy.mode,
            allow_nets=allow[0],
            deny_nets=deny[0],
            allow_names=allow[1],
            allow_suffixes=allow[2],
            allow_any_name=allow[3],
            deny_names=deny[1],
            deny_suffixes=deny[2],
            deny_any_name=deny[3],
            audit_allowed=policy.audit_allowed,
        )

    def name_denied(self, name: str) -> bool:
        """Whether ``name`` matches a deny entry (whatever the mode)."""
        return self.deny_any_name or name in self.deny_names or name.endswith(self.deny_suffixes)

    def name_allowed(self, name: str) -> bool:
        """Whether the resolver may answer ``name`` for this sandbox."""
        if self.name_denied(name):
            return False
        if self.mode is EgressMode.ALLOW_ALL:
            return True
        return self.allow_any_name or name in self.allow_names or name.endswith(self.allow_suffixes)

    @property
    def pins_answers(self) -> bool:
        """Answers open the firewall (deny_all: resolve-and-pin)."""
        return self.mode is EgressMode.DENY_ALL

    @property
    def blocks_answers(self) -> bool:
        """Denied names' addresses are closed in the firewall (allow_all with name
        deny entries)."""
        return self.mode is EgressMode.ALLOW_ALL and bool(
            self.deny_names or self.deny_suffixes or self.deny_any_name
        )


def _split(
    entries: tuple[str, ...],
) -> tuple[tuple[ipaddress.IPv4Network, ...], frozenset[str], tuple[str, ...], bool]:
    nets: list[ipaddress.IPv4Network] = []
    names: set[str] = set()
    suffixes: list[str] = []
    any_name = False
    for entry in entries:
        if entry == "*":
            any_name = True
        elif entry.startswith("*."):
            suffixes.append(entry[1:])
        elif "/" in entry:
            net = ipaddress.ip_network(entry)
            if isinstance(net, ipaddress.IPv4Network):
                nets.append(net)
        else:
            names.add(entry)
    return tuple(nets), frozenset(names), tuple(suffixes), any_name
