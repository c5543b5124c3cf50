"""Kill switches: an engaged switch refuses new sandboxes for one org, or for all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

GLOBAL = "*"
"""The scope of the switch that holds for every org."""


@dataclass(frozen=True)
class Switch:
    scope: str  # an org id, or GLOBAL
    engaged_at: datetime
    reason: str
