"""The composition root: the one module that imports adapters (the store, the runtime,
the network; tests/unit/test_layers.py holds it to that), builds the services over
them, and starts and stops them.

``Core.open`` makes the data dir private and claims it (``corral.datadir``: modes
fixed at every start, one server per data dir),
connects the store (migrating it), seeds the first key, reconciles the
node with the store and starts the idle reaper, the audit writer and the kill-switch
refresher. Tests pass their own runtime and templates (fakes or real ones), and a
clock (``corral.clock``) where time must pass without waiting. The CLI's local
commands get their stores and templates here too (``local_stores``, ``local_templates``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral import heap
from corral.auth.ratelimit import RateLimiter, surface_limits
from corral.auth.service import AuthService, load_or_create_secret
from corral.background import Background
from corral.clock import SYSTEM, Clock
from corral.datadir import claim, secure
from corral.errors import CorralError
from corral.metrics import Metrics
from corral.ports import (
    BindingStore,
    Builder,
    KeyStore,
    Network,
    Runtime,
    Snapshotter,
    SwitchStore,
    Templates,
    UserStore,
)
from corral.runtime.capacity import node_capacity
from corral.runtime.checkpoint_dirs import CheckpointDirs
from corral.services.activity import Activity
from corral.services.admission import Admission
from corral.services.agent_sessions import AgentSessionService
from corral.services.audit import AuditService
from corral.services.bindings import BindingService, recorder
from corral.services.checkpoints import CheckpointService
from corral.services.commands import CommandService
from corral.services.compute import ComputeService
from corral.services.computer_use import ComputerUseAgent
from corral.services.create_queue import CreateQueue
from corral.services.desktop import DesktopBoot, DesktopService
from corral.services.egress import EgressService
from corral.services.files import FileService
from corral.services.hibernator import Hibernator
from corral.services.hub import Hub
from corral.services.interpreter import InterpreterBoot
from corral.services.keys import KeyService
from corral.services.kill_switch import KillSwitch
from corral.services.lifecycle import LifecycleService
from corral.services.members import MemberService
from corral.services.models import ModelService
from corral.services.output import OutputBudget
from corral.services.patches import PatchService
from corral.services.previews import PreviewService
from corral.services.runner import TEMPLATES, Runner
from corral.services.runs import RunService
from corral.services.sandboxes import SandboxService, default_limits
from corral.services.session_queue import SessionQueue
from corral.services.sessions import SessionService, bounds_of
from corral.services.standby import Standby
from corral.services.stored_switches import StoredSwitches
from corral.services.template_names import TemplateNames
from corral.services.templates import TemplateService
from corral.services.webhooks import WebhookService
from corral.services.workspace import WorkspaceService
from corral.settings import Settings
from corral.store.bindings import SqlBindingStore
from corral.store.checkpoints import SqlCheckpointStore, SqlTemplateBuildStore
from corral.store.database import Database
from corral.store.events import SqlEventStore
from corral.store.keys import SqlKeyStore
from corral.store.kill_switches import SqlSwitchStore
from corral.store.previews import SqlPreviewStore
from corral.store.sandboxes import SqlSandboxStore
from corral.store.sessions import SqlSessionStore
from corral.store.threads import SqlThreadStore
from corral.store.users import SqlUserStore

if TYPE_CHECKING:
    from corral.network.forwarder import Forwarder, ForwarderConfig
    from corral.network.node import NodeNetwork
    from corral.network.quota import QuotaLimits

log = logging.getLogger("corral")

STANDBY_WITH_RUNC = 2  # sandboxes started ahead when the setting says nothing


@dataclass
class Core:
    """What the surfaces and the gateway use, built over the adapters by ``open``. Adding a
    service: a field here, its construction in ``_open`` (and, if it runs in the
    background, one ``background.start`` there)."""

    settings: Settings
    db: Database
    runtime: Runtime
    templates: Templates
    auth: AuthService
    sandboxes: SandboxService
    commands: CommandService
    files: FileService
    previews: PreviewService
    kill_switch: KillSwitch
    audit: AuditService
    metrics: Metrics
    keys: KeyService
    members: MemberService  # an org's users over HTTP
    limiter: RateLimiter
    stored_switches: StoredSwitches
    egress: EgressService
    lifecycle: LifecycleService
    checkpoints: CheckpointService
    patches: PatchService
    template_builds: TemplateService
    bindings: BindingService
    webhooks: WebhookService
    sessions: SessionService
    workspace: WorkspaceService
    compute: ComputeService  # Copass compute sessions (corral/api/copass)
    desktop: DesktopService  # the desktop of gui sandboxes, for every surface
    models: ModelService  # the Anthropic Messages API, with the key only the host holds
    agents: AgentSessionService  # OpenComputer agent sessions (Claude Agent SDK in a sandbox)
    runs: RunService  # agent runs on a desktop (corral/api/runs)
    hub: Hub  # what several parts must hear (services/hub.py)
    background: Background  # what runs in the background, stopped by close (corral/background.py)
    network: NodeNetwork | None = None
    forwarder: Forwarder | None = None  # the binding forwarder, when the core runs it (not the network)
    bootstrap_key: str | None = None

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        runtime: Runtime | None = None,
        templates: Templates | None = None,
        reconcile: bool = True,
        metrics: Metrics | None = None,
        clock: Clock = SYSTEM,
    ) -> Core:
        """Everything built and started; if anything fails, what was started is stopped."""
        secure(settings.data_dir, settings.uid_base)  # private, before anything is written there
        background = Background()
        held = claim(settings.data_dir)  # before anything is reconciled or bound
        background.adopt("the data dir's claim", held.release)
        try:
            return await cls._open(
                settings, background, runtime, templates, reconcile, metrics or Metrics(), clock
            )
        except BaseException:
            await background.close()
            raise

    @classmethod
    async def _open(
        cls,
        settings: Settings,
        background: Background,
        runtime: Runtime | None,
        templates: Templates | None,
        reconcile: bool,
        metrics: Metrics,
        clock: Clock,
    ) -> Core:
        # Started in this order, stopped in the reverse one (corral/background.py).
        hub = Hub()
        db = await Database.open(settings.db_url)
        background.adopt("the store", db.close)
        secret = settings.jwt_secret or load_or_create_secret(settings.data_dir / "jwt-secret")
        auth = AuthService(
            SqlKeyStore(db),
            secret,
            settings.worker_token_ttl_s,
            settings.user_token_ttl_s,
            users=SqlUserStore(db),
        )
        hub.key_revoked.subscribe(auth.forget_key)
        sandbox_store = SqlSandboxStore(db)
        audit = AuditService(
            SqlEventStore(db),
            sandbox_store,
            metrics,
            queue_size=settings.audit_queue_size,
            batch_size=settings.audit_batch_size,
        )
        await background.start("the audit writer", audit.start, audit.close)  # stopped after all who record
        models = default_models(settings, audit, metrics)
        background.adopt("the model API client", models.close)
        network = None
        if runtime is None:
            network = default_network(settings, audit, _org_of(sandbox_store), models)
            if network is not None:  # its resolver, denial reader and namespace refills
                await background.start("the network", network.start, network.close)
            runtime = default_runtime(settings, network)
        background.adopt("the runtime's teardowns", runtime.settle)  # settled before the network closes
        templates = templates or default_templates(settings)
        kill_switch = KillSwitch(engaged=not settings.gateway_enabled)
        capacity = node_capacity(settings)
        log.info(
            "this node may promise %s MiB of disk and %s MiB of memory", capacity.disk_mb, capacity.memory_mb
        )
        standby = default_standby(settings, runtime, templates, metrics, clock)
        admission = Admission(
            sandbox_store,
            kill_switch,
            settings.max_live_sandboxes_per_org,
            capacity,
            standing=standby.holds() if standby is not None else None,
            queue=CreateQueue(settings.max_concurrent_creates, settings.max_queued_creates),
        )
        template_build_store = SqlTemplateBuildStore(db)
        snapshotter = default_snapshotter(runtime, settings)
        activity = Activity(clock)
        # run in every sandbox started: the desktop of gui, the code interpreter's server
        boot_hooks = (DesktopBoot(runtime.agent), InterpreterBoot(runtime.agent))
        hibernator = Hibernator(
            sandbox_store,
            runtime,
            admission=admission,
            names=TemplateNames(templates, template_build_store),
            activity=activity,
            audit=audit,
            metrics=metrics,
            hub=hub,
            boot_hooks=boot_hooks,
            clock=clock,
        )
        sandboxes = SandboxService(
            sandbox_store,
            runtime,
            templates,
            settings,
            audit=audit,
            metrics=metrics,
            admission=admission,
            builds=template_build_store,
            hub=hub,
            activity=activity,
            waker=hibernator,
            standby=standby,
            snapshotter=snapshotter,
            boot_hooks=boot_hooks,
            clock=clock,
        )
        hub.sandbox_stopped.subscribe(sandboxes.forget_running)
        hub.sandbox_paused.subscribe(sandboxes.remember_paused)
        models.on_sandbox_call = sandboxes.touch  # a sandbox's model calls are its activity
        lifecycle = LifecycleService(sandboxes, hibernator, snapshotter)
        checkpoint_store = SqlCheckpointStore(db)
        patches = PatchService(checkpoint_store, sandboxes)
        checkpoints = CheckpointService(
            checkpoint_store, CheckpointDirs(settings.data_dir / "checkpoints"), lifecycle, patches
        )
        template_builds = TemplateService(
            template_build_store,
            default_builder(settings, runtime, templates, network),
            checkpoint_store,
            sandboxes,
            max_running_per_org=settings.build_max_running_per_org,
            standby=standby,
        )
        forwarder = (
            network.forwarder
            if network is not None
            else await loopback_forwarder(settings, runtime, audit, models)
        )
        if network is None and forwarder is not None:  # the network's is stopped with it
            background.adopt("the binding forwarder", forwarder.close)
        bindings = BindingService(SqlBindingStore(db), runtime, audit, forwarder)
        webhooks = default_webhooks(settings, audit)
        background.adopt("the webhooks", webhooks.close)
        previews = PreviewService(SqlPreviewStore(db), sandboxes, settings, pass_key=_pass_key(secret))
        hub.sandbox_stopped.subscribe(previews.forget)
        exec_turns = CreateQueue(
            settings.max_concurrent_execs,
            settings.max_queued_execs,
            max_hold_s=settings.exec_turn_max_s,
            work="running {} exec round trips",
            setting="max_queued_execs",
        )
        commands = CommandService(sandboxes, output_budget(settings), exec_turns)
        background.adopt("following exec sessions", commands.session_ends.close)
        files = FileService(sandboxes)
        sessions = SessionService(
            SqlSessionStore(db),
            sandboxes,
            Runner(commands, files, sandboxes.usage),
            audit,
            SessionQueue(settings.max_concurrent_sessions, settings.max_concurrent_sessions_per_org),
            bounds_of(settings),
            bindings=bindings,
            webhooks=webhooks,
            clock=clock,
        )
        desktop = DesktopService(sandboxes, previews)
        runs = RunService(
            SqlThreadStore(db),
            sandboxes,
            desktop,
            ComputerUseAgent(models, model_name=settings.runs_model, max_steps=settings.runs_max_steps),
            audit,
            run_deadline_s=settings.runs_deadline_s,
            clock=clock,
        )
        stored_switches = StoredSwitches(SqlSwitchStore(db), kill_switch, settings.kill_switch_refresh_s)
        await stored_switches.refresh()
        bootstrap_key = await auth.bootstrap(settings.api_key, settings.data_dir / "admin-key")
        if reconcile:
            await sandboxes.reconcile()
            await sessions.reconcile()  # after the sandboxes': it kills its sessions' sandboxes
            await runs.reconcile()
            await checkpoints.recover()
            await template_builds.recover()
        if standby is not None:  # removes its sandboxes when stopped, before the teardowns are awaited
            await background.start("the standby sandboxes", standby.start, standby.close)
        await background.start("the idle reaper", sandboxes.start_reaper, sandboxes.stop_reaper)
        await background.start("the kill-switch refresher", stored_switches.start, stored_switches.close)
        background.adopt("the code sessions", sessions.close)  # stopped first: they end with this process
        background.adopt("the agent runs", runs.close)  # they end with this process, their desktops stay
        return cls(
            settings=settings,
            db=db,
            runtime=runtime,
            templates=templates,
            auth=auth,
            sandboxes=sandboxes,
            commands=commands,
            files=files,
            previews=previews,
            kill_switch=kill_switch,
            audit=audit,
            metrics=metrics,
            keys=KeyService(auth, audit, hub),
            members=MemberService(SqlUserStore(db), auth.keys, audit),
            limiter=RateLimiter(surface_limits(settings), clock.monotonic),
            stored_switches=stored_switches,
            egress=EgressService(sandboxes),
            lifecycle=lifecycle,
            checkpoints=checkpoints,
            patches=patches,
            template_builds=template_builds,
            bindings=bindings,
            webhooks=webhooks,
            sessions=sessions,
            workspace=WorkspaceService(sandboxes, commands),
            compute=ComputeService(sandboxes, commands, kill_switch, settings.compute_sessions_per_user),
            desktop=desktop,
            models=models,
            agents=AgentSessionService(sandboxes, commands, bindings, models),
            runs=runs,
            hub=hub,
            background=background,
            network=network,
            forwarder=forwarder if network is None else None,
            bootstrap_key=bootstrap_key,
        )

    async def close(self) -> None:
        """Stop the background work, last started first: every queued audit record is
        written, the runtime's teardowns settle before the network closes, the store
        closes and the data dir is released last. Sandboxes keep running, but for the code
        sessions' (they end with this process)."""
        await self.background.close()


def default_standby(
    settings: Settings, runtime: Runtime, templates: Templates, metrics: Metrics, clock: Clock
) -> Standby | None:
    """Sandboxes started ahead (services/standby.py): as many as ``standby_memory_mb``
    holds of the default memory limit, or ``standby_sandboxes`` (``STANDBY_WITH_RUNC``
    with the runc runtime when the setting says nothing) of each of the default template
    and the code sessions' ones."""
    size = settings.standby_sandboxes
    if size is None:
        size = STANDBY_WITH_RUNC if runtime.name == "runc" else 0
    limits = default_limits(settings)
    also = tuple(TEMPLATES.values())
    budget = len(dict.fromkeys((settings.default_template, *also))) * size
    if settings.standby_memory_mb is not None:
        budget = settings.standby_memory_mb // limits.memory_mb
    if not budget:
        return None
    return Standby(
        runtime,
        templates,
        settings.default_template,
        limits,
        budget,
        metrics,
        also=also,
        window_s=settings.standby_window_s,
        clock=clock,
    )


def default_models(settings: Settings, audit: AuditService, metrics: Metrics) -> ModelService:
    """Model access over the Anthropic API at ``anthropic_base_url`` with
    ``anthropic_api_key`` (none set: a service that says ModelUnavailable)."""
    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else ""
    if not key:
        return ModelService(None, audit, metrics)
    from corral.network.anthropic import AnthropicClient

    ca_file = str(settings.bindings_ca_file) if settings.bindings_ca_file else None
    client = AnthropicClient(
        settings.anthropic_base_url, key, timeout=settings.anthropic_timeout_s, ca_file=ca_file
    )
    return ModelService(client, audit, metrics, key, settings.anthropic_base_url)


def output_budget(settings: Settings) -> OutputBudget:
    """The server's budget of command output in memory (services/output.py); the C heap
    tuned so that output buffers go back to the system when freed (corral.heap)."""
    heap.tune()
    return OutputBudget(
        settings.exec_output_budget,
        settings.exec_output_limit,
        settings.exec_output_floor,
        on_release=heap.trim,
    )


def default_network(
    settings: Settings,
    audit: AuditService,
    org_of: Callable[[str], Awaitable[str | None]],
    models: ModelService | None = None,
) -> NodeNetwork | None:
    """The node's network for the runc runtime (not started yet), or None. Denied (and
    audited allowed) connections go to ``audit``; ``org_of`` tells the resolver a
    sandbox's org; ``models`` meters calls of the model binding."""
    if settings.runtime != "runc" or not settings.network_enabled:
        return None
    from corral.network.node import NodeNetwork

    return NodeNetwork(
        settings.network_state_dir,
        audit.egress_denied,
        on_allowed=audit.egress_allowed,
        pool=settings.network_pool,
        bridge_name=settings.network_bridge,
        upstreams=settings.network_dns_upstreams,
        nflog_group=settings.network_nflog_group,
        extra_denied=settings.network_extra_denied,
        table=settings.network_bridge,
        netns_prefix=f"{settings.network_bridge}-",
        pin_private=settings.network_pin_private,
        ready_namespaces=settings.network_ready_namespaces,
        dns_limits=_dns_limits(settings),
        dns_timeout=settings.network_dns_upstream_timeout_s,
        dns_deadline=settings.network_dns_deadline_s,
        forwarder_port=settings.bindings_port,
        forwarder_config=_forwarder_config(settings),
        on_binding_call=recorder(audit, models),
        org_of=org_of,
    )


async def loopback_forwarder(
    settings: Settings, runtime: Runtime, audit: AuditService, models: ModelService | None = None
) -> Forwarder | None:
    """The binding forwarder on 127.0.0.1, started, for the process runtime (whose
    sandboxes are host processes: no isolation, docs/security.md); None otherwise (the
    runc runtime's is its network's, on the bridge; without a network there is none)."""
    if runtime.name != "process":
        return None
    from corral.network.forwarder import Forwarder

    forwarder = Forwarder(recorder(audit, models), _forwarder_config(settings))
    await forwarder.start("127.0.0.1", settings.bindings_port)
    return forwarder


def _forwarder_config(settings: Settings) -> ForwarderConfig:
    from corral.network.forwarder import ForwarderConfig

    return ForwarderConfig(
        max_body=settings.bindings_max_body_mb * 1024 * 1024,
        calls_per_sandbox=settings.bindings_calls_per_sandbox,
        deadline=settings.bindings_deadline_s,
        ca_file=str(settings.bindings_ca_file) if settings.bindings_ca_file else None,
    )


def default_webhooks(settings: Settings, audit: AuditService) -> WebhookService:
    from corral.network.webhook import WebhookClient

    return WebhookService(
        WebhookClient(allow_private=settings.webhook_allow_private),
        audit,
        allow_private=settings.webhook_allow_private,
        timeout=settings.webhook_timeout_s,
        attempts=settings.webhook_attempts,
    )


def _dns_limits(settings: Settings) -> QuotaLimits:
    from corral.network.quota import QuotaLimits

    if settings.network_dns_reserve >= settings.network_dns_total_outstanding:
        raise CorralError("CORRAL_NETWORK_DNS_RESERVE must be less than CORRAL_NETWORK_DNS_TOTAL_OUTSTANDING")
    return QuotaLimits(
        outstanding=settings.network_dns_sandbox_outstanding,
        rate=settings.network_dns_sandbox_rate,
        burst=settings.network_dns_sandbox_burst,
        org_outstanding=settings.network_dns_org_outstanding,
        total=settings.network_dns_total_outstanding,
        reserve=settings.network_dns_reserve,
    )


def _org_of(store: SqlSandboxStore) -> Callable[[str], Awaitable[str | None]]:
    """The org of a sandbox by id, for the resolver's bounds per org (None: no row yet,
    e.g. a standby sandbox not yet claimed)."""

    async def org_of(sandbox_id: str) -> str | None:
        row = await store.find(sandbox_id)
        return row.org_id if row is not None else None

    return org_of


def default_runtime(settings: Settings, network: Network | None = None) -> Runtime:
    if settings.runtime == "process":
        from corral.runtime.process import ProcessRuntime

        return ProcessRuntime(settings.data_dir / "process-sandboxes")
    from corral.runtime.runc import RuncRuntime

    return RuncRuntime(settings, network=network)


def default_templates(settings: Settings) -> Templates:
    from corral.runtime.catalog import TemplateCatalog

    return TemplateCatalog(settings)


def default_snapshotter(runtime: Runtime, settings: Settings) -> Snapshotter:
    """The disks' snapshots (checkpoints, forks, restores) of the runc, process and fake
    runtimes; for any other runtime a snapshotter that says Unavailable (and keeps no
    disk: its idle sandboxes are stopped, not hibernated)."""
    from corral.runtime.memory import FakeRuntime, FakeSnapshots
    from corral.runtime.nosnapshot import NoSnapshots
    from corral.runtime.process import ProcessRuntime
    from corral.runtime.runc import RuncRuntime

    if isinstance(runtime, RuncRuntime):
        from corral.runtime.snapshot import RuncSnapshots

        return RuncSnapshots(runtime, settings)
    if isinstance(runtime, ProcessRuntime):
        from corral.runtime.process_snapshot import ProcessSnapshots

        return ProcessSnapshots(runtime)
    if isinstance(runtime, FakeRuntime):
        return FakeSnapshots(runtime)
    return NoSnapshots()


def default_builder(
    settings: Settings, runtime: Runtime, templates: Templates, network: Network | None = None
) -> Builder | None:
    """buildah for the runc runtime over the default catalog, when it is installed; its
    builds get their networks from ``network`` (None: loopback only)."""
    import shutil

    from corral.runtime.catalog import TemplateCatalog
    from corral.runtime.runc import RuncRuntime

    if not isinstance(runtime, RuncRuntime) or not isinstance(templates, TemplateCatalog):
        return None
    if shutil.which("buildah") is None:
        return None
    from corral.runtime.builder import BuildahBuilder

    return BuildahBuilder(settings, templates, network=network)


@dataclass(frozen=True)
class LocalStores:
    """The node's stores, for one piece of work of the CLI's local commands."""

    keys: KeyStore
    users: UserStore
    switches: SwitchStore
    bindings: BindingStore


@asynccontextmanager
async def local_stores(settings: Settings) -> AsyncIterator[LocalStores]:
    """The stores of ``settings``' database (opened and migrated), closed after."""
    db = await Database.open(settings.db_url)
    try:
        yield LocalStores(SqlKeyStore(db), SqlUserStore(db), SqlSwitchStore(db), SqlBindingStore(db))
    finally:
        await db.close()


def local_templates(settings: Settings) -> Templates:
    """The node's template store; ImportError where the builder cannot load."""
    from corral.runtime.templates import TemplateStore

    store: Templates = TemplateStore(settings)
    return store


def _pass_key(secret: str) -> bytes:
    """The key of preview passes (services/previews.py), derived from the server's
    signing secret: passes outlive restarts, and nothing signed for tokens is a pass."""
    return hmac.new(secret.encode(), b"corral preview passes", hashlib.sha256).digest()
