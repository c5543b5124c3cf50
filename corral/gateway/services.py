"""What the gateway uses of the services: these and nothing else of ``Core``
(``corral.api.app`` hands them over when it builds the ``Gateway``)."""

from __future__ import annotations

from dataclasses import dataclass

from corral.auth.service import AuthService
from corral.metrics import Metrics
from corral.services.hibernator import Hibernator
from corral.services.kill_switch import KillSwitch
from corral.services.previews import PreviewService
from corral.services.sandboxes import SandboxService
from corral.settings import Settings


@dataclass(frozen=True)
class GatewayServices:
    settings: Settings  # the gateway_* settings
    metrics: Metrics  # gateway_request
    auth: AuthService  # API keys and tokens
    kill_switch: KillSwitch
    previews: PreviewService  # routes of sandboxes, preview tokens
    sandboxes: SandboxService  # activity (touch), the row of a sandbox to wake
    hibernator: Hibernator  # wakes (awake)
