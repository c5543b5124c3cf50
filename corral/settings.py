"""Settings, from flags or ``CORRAL_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    data_dir: Path = Path("/var/lib/corral")
    database_url: str | None = None  # default: SQLite at <data_dir>/corral.db
    api_key: str | None = None  # seeds the first owner key when the store is empty
    public_url: str | None = None  # what clients use to reach us; default http://host:port

    runtime: Literal["runc", "process"] = "runc"  # process: tests only, no isolation
    oci_runtime: str = "runc"  # OCI binary: runc, runsc, kata-runtime
    runc_root: Path = Path("/run/corral/runc")

    # user namespace: container root is host uid/gid `uid_base`, `uid_count` ids mapped
    # (above the host's own users, 0..65535: a sandbox never holds a host user's id)
    uid_base: Annotated[int, Field(ge=65536, le=(1 << 32) - 1 - 65536)] = 100000
    uid_count: Annotated[int, Field(ge=65536, le=1 << 24)] = 65536
    # each sandbox's user namespace is owned by a host uid of its own from this range (no
    # host user may have one), so what it holds of the kernel's per-user counts (inotify,
    # message queues, queued signals) is bounded per sandbox, not taken from host root
    # (corral.runtime.userns; docs/security.md, "Kernel pools")
    userns_owner_base: Annotated[int, Field(ge=65536, le=(1 << 32) - 2)] = 1 << 30
    userns_owner_count: Annotated[int, Field(ge=1, le=1 << 24)] = 1 << 20
    # POSIX message-queue bytes the users of one sandbox may hold together (its user
    # namespace's RLIMIT_MSGQUEUE; at most corral's own hard limit)
    sandbox_msgqueue_bytes: Annotated[int, Field(ge=0)] = 819_200

    default_template: str = "base"
    # a sandbox idle for its timeout (default_timeout_s unless its create says) is paused
    # (frozen, memory kept); idle paused_idle_s more, it is hibernated (memory freed, disk
    # kept). paused_idle_s 0: the idle timeout hibernates it at once, never pausing it.
    default_timeout_s: Annotated[int, Field(ge=0, le=30 * 24 * 3600)] = 300
    paused_idle_s: Annotated[int, Field(ge=0, le=30 * 24 * 3600)] = 1800
    max_cpu_count: Annotated[int, Field(ge=1)] = 4
    max_memory_mb: Annotated[int, Field(ge=64)] = 2048
    default_memory_mb: Annotated[int, Field(ge=64)] = 512  # at most max_memory_mb
    default_disk_mb: Annotated[int, Field(ge=64)] = 2048  # at most max_disk_mb
    max_disk_mb: Annotated[int, Field(ge=64)] = 20480
    pids_limit: Annotated[int, Field(ge=16)] = 512
    # PTYs a sandbox may hold open at once (its devpts instance's max=); docs/security.md, "PTYs"
    pty_max: Annotated[int, Field(ge=1, le=65536)] = 256

    worker_token_ttl_s: Annotated[int, Field(ge=60)] = 3600
    exec_output_limit: Annotated[int, Field(ge=0)] = 16 * 1024 * 1024  # bytes kept per stream of exec/run
    # command output held in memory by the whole server (exec/run answers being sent,
    # run-async results): beyond it, output is dropped and answers say truncated
    # (corral.services.output); each command's first exec_output_floor bytes are always kept
    exec_output_budget: Annotated[int, Field(ge=0)] = 256 * 1024 * 1024
    exec_output_floor: Annotated[int, Field(ge=0)] = 64 * 1024
    reaper_interval_s: Annotated[float, Field(gt=0)] = 5.0
    # sandboxes started ahead (corral.services.standby), for the default template and the
    # code sessions' nodejs; None: 2 with the runc runtime, 0 with the process one
    standby_sandboxes: Annotated[int, Field(ge=0, le=64)] | None = None
    # the memoryMB all standbys hold in all (each the default memory limit), shared between
    # the templates in use by their creates over the last standby_window_s seconds; None:
    # standby_sandboxes of each of those two (0 sandboxes: none)
    standby_memory_mb: Annotated[int, Field(ge=0)] | None = None
    standby_window_s: Annotated[float, Field(gt=0)] = 600.0

    # per-sandbox networks (corral.network): a netns, a veth to the bridge, NAT, nftables
    network_enabled: bool = True  # False: sandboxes have loopback only
    network_state_dir: Path = Path("/run/corral/network")
    network_pool: str = "10.213.0.0/16"  # sandbox addresses; the bridge takes the first
    # also names the nftables table and the netns prefix: an interface name (15 at most)
    network_bridge: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,15}$")] = "corral0"
    network_dns_upstreams: list[str] | None = None  # None: the host's /etc/resolv.conf
    network_nflog_group: Annotated[int, Field(ge=0, le=65535)] = 213  # denied connections' log; one per node
    network_extra_denied: list[str] = []  # CIDRs never reachable (e.g. the site's LAN)
    network_pin_private: bool = False  # let allowed hostnames resolve to private addresses
    network_ready_namespaces: Annotated[int, Field(ge=0)] = 4  # made ahead: a create claims one (0: off)
    # the sandboxes' resolver (corral.network.quota): what one sandbox, one org and the
    # node may have at once; a query beyond is answered REFUSED at once
    network_dns_sandbox_outstanding: Annotated[int, Field(ge=1)] = 32  # queries being answered
    network_dns_sandbox_rate: Annotated[float, Field(gt=0)] = 100.0  # queries a second (average)
    network_dns_sandbox_burst: Annotated[int, Field(ge=1)] = 200  # queries at once after a quiet spell
    network_dns_org_outstanding: Annotated[int, Field(ge=1)] = 128  # of an org's, at the upstreams
    network_dns_total_outstanding: Annotated[int, Field(ge=1)] = 512  # of the node's, at the upstreams
    network_dns_reserve: Annotated[int, Field(ge=0)] = 128  # of the total: for orgs under one sandbox's worth
    network_dns_upstream_timeout_s: Annotated[float, Field(gt=0)] = 2.0  # one upstream's answer
    network_dns_deadline_s: Annotated[float, Field(gt=0)] = 4.0  # a relay, over every upstream tried

    # service bindings (corral.network.forwarder): the forwarder sandboxes call them through,
    # on the bridge address (127.0.0.1 with the process runtime); 0: a free port
    bindings_port: Annotated[int, Field(ge=0, le=65535)] = 0
    bindings_max_body_mb: Annotated[int, Field(ge=1)] = 32  # of one request from a sandbox
    bindings_calls_per_sandbox: Annotated[int, Field(ge=1)] = 16  # calls of one sandbox at once
    bindings_deadline_s: Annotated[float, Field(gt=0)] = 600.0  # one call, its streamed answer included
    bindings_ca_file: Path | None = None  # PEM: the CAs HTTPS upstreams are checked against (None: certifi's)
    # model access (corral.services.models): the Anthropic Messages API, called from this
    # host with this key, and by sandboxes through a binding that adds it outside them
    # (None: agent sessions and runs answer 503 saying to set CORRAL_ANTHROPIC_API_KEY)
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_timeout_s: Annotated[float, Field(gt=0)] = 600.0  # one host-side call
    # agent runs (corral.services.runs, the /api/sessions surface): the computer-use model,
    # and the limits of one run (model calls; wall clock, desktop provisioning included)
    runs_model: str = "claude-sonnet-4-5"
    runs_max_steps: Annotated[int, Field(ge=1, le=1000)] = 50
    runs_deadline_s: Annotated[float, Field(gt=0)] = 900.0
    # webhooks (corral.services.webhooks): POSTed from this host to a tenant's URL
    webhook_allow_private: bool = False  # let them reach loopback, private and link-local addresses
    webhook_timeout_s: Annotated[float, Field(gt=0)] = 10.0  # one attempt
    webhook_attempts: Annotated[int, Field(ge=1, le=10)] = 4  # in all, backing off 1 s, 4 s, 16 s...

    # template builds from Dockerfiles (corral.runtime.confinement): their RUN steps run
    # confined like a sandbox; the host, control plane, sandboxes and link-local are
    # always denied; only these names/CIDRs are reachable (the package registries the
    # corral templates' apt, pip and npm use); []: nothing
    build_egress_allow: list[str] = [
        "deb.debian.org",
        "security.debian.org",
        "pypi.org",
        "files.pythonhosted.org",
        "registry.npmjs.org",
    ]
    # registries a build may pull images from (FROM, COPY --from=): buildah pulls them from
    # the host, outside the build's confinement; host[:port], a bare name is docker.io's
    build_registries: list[str] = ["docker.io", "ghcr.io", "quay.io"]
    build_memory_mb: Annotated[int, Field(ge=64)] = 2048  # per RUN step, no swap
    build_cpu_count: Annotated[int, Field(ge=1)] = 2  # CPU quota of a RUN step
    build_pids_limit: Annotated[int, Field(ge=16)] = 1024  # processes of a whole build
    build_timeout_s: Annotated[float, Field(gt=0)] = 1800.0  # a whole build; then it fails
    build_max_running_per_org: Annotated[int, Field(ge=0)] = 2  # builds at once (429 beyond); 0: no cap

    # the gateway (corral.gateway): servers inside sandboxes, by host or by path
    gateway_enabled: bool = True  # False: every gateway request is 503 (the kill switch)
    gateway_domain: str = "localhost"  # hosts {port}-{id}.<domain> and {id}-p{port}.<domain>
    gateway_extra_domains: list[str] = []  # more domains routed the same way (preview `domain`)
    gateway_cors_origins: list[str] = []  # origins allowed cross-origin; "*" for any
    gateway_cache_ttl_s: float = 5.0  # sandbox, preview and API-key lookups are cached this long
    gateway_connect_timeout_s: float = 5.0
    gateway_read_timeout_s: float = 3600.0  # idle time allowed between reads from a server
    gateway_head_timeout_s: float = 30.0  # a response head must be complete this long after it starts
    gateway_max_header_bytes: int = 64 * 1024  # of a response head from a sandbox
    gateway_max_headers: int = 100
    gateway_ws_max_message: int = 16 * 1024 * 1024

    # the HTTP server's own limits on clients (corral.api.front)
    http_head_timeout_s: float = 30.0  # a request head must arrive within this
    http_max_header_bytes: int = 64 * 1024
    http_max_headers: int = 100
    http_keep_alive_s: int = 5
    # A line per HTTP request on stderr (uvicorn's access log). Off by default: preview
    # traffic through the gateway would flood it (and it costs a quarter of the
    # gateway's requests/s); actions are in the audit trail, counts in /metrics.
    access_log: bool = False

    # principals, quotas and the audit trail (corral.auth, corral.api.guard, corral.services)
    # HS256 secret of tokens (32 characters at least: a short one lets tokens be forged);
    # default: <data dir>/jwt-secret, generated
    jwt_secret: Annotated[str, Field(min_length=32)] | None = None
    user_token_ttl_s: Annotated[int, Field(ge=60, le=86400)] = 900  # POST /api/v1/auth/token tokens
    # requests a minute per principal (or client address): /api and worker routes, /api/v1
    # (spec 002), /api/sessions (spec 004); 0 turns a limit off
    rate_limit_api: Annotated[int, Field(ge=0)] = 600
    rate_limit_xgen: Annotated[int, Field(ge=0)] = 120
    rate_limit_runs: Annotated[int, Field(ge=0)] = 60
    rate_limit_enclave: Annotated[int, Field(ge=0)] = 600  # /sessions (spec 001)
    rate_limit_copass: Annotated[int, Field(ge=0)] = 600  # /api/v1/storage/sandboxes (Copass compute)
    # Copass compute sessions (corral/api/copass) one user (API key or user) holds live at
    # once, over all its namespaces; a create beyond it is 409; 0: no cap
    compute_sessions_per_user: Annotated[int, Field(ge=0)] = 10
    # code sessions (/sessions, spec 001) holding a slot at once: on this node, and of one
    # org; those over a ceiling wait in "pending", first in first out; 0: no ceiling
    max_concurrent_sessions: Annotated[int, Field(ge=0)] = 16
    max_concurrent_sessions_per_org: Annotated[int, Field(ge=0)] = 8
    session_max_wall_clock_s: Annotated[int, Field(ge=1)] = 3600  # wallClockSeconds allowed
    max_live_sandboxes_per_org: Annotated[int, Field(ge=0)] = 50  # 0: no cap
    # creates (and forks, restores, wakes) this node works on at once; the others wait in
    # a queue, orgs taking turns (corral.services.create_queue), at most max_queued_creates
    # of them: one more is 429 with Retry-After. 0: no bound, no queue. A create waits on
    # its programs and threads about half its time: 12 keep two cores busy through a burst
    # (docs/benchmarks.md, "Bursts of 100, a third pass")
    max_concurrent_creates: Annotated[int, Field(ge=0)] = 12
    max_queued_creates: Annotated[int, Field(ge=0)] = 256
    # exec round trips (exec run, sync and async, of every surface) this node works on at
    # once; the others wait, orgs taking turns (the same queue as creates), at most
    # max_queued_execs of them: one more is 429 with Retry-After. A turn is held at most
    # exec_turn_max_s: a longer command waits in its sandbox and no longer counts, so a wait
    # is at most about ceil(max_queued_execs / max_concurrent_execs) * exec_turn_max_s.
    # Keeps the event loop's queue short under many execs, so other requests interleave.
    # 0: no bound, no queue
    max_concurrent_execs: Annotated[int, Field(ge=0)] = 8
    max_queued_execs: Annotated[int, Field(ge=0)] = 1024
    exec_turn_max_s: Annotated[float, Field(gt=0)] = 1.0
    # what this node may promise its sandboxes in all (corral.runtime.capacity): MiB of disk
    # (diskMB of live and hibernated sandboxes and standbys) and of memory (memoryMB of live
    # ones); a create, fork, restore or wake beyond it is 409 naming the setting.
    # None: derived at start (disk: free space + sandbox disks - disk_reserve_percent of the
    # data dir's filesystem; memory: host memory x memory_overcommit); 0: no limit
    max_promised_disk_mb: Annotated[int, Field(ge=0)] | None = None
    max_promised_memory_mb: Annotated[int, Field(ge=0)] | None = None
    disk_reserve_percent: Annotated[float, Field(ge=0, le=100)] = 5.0
    memory_overcommit: Annotated[float, Field(gt=0)] = 1.5
    kill_switch_refresh_s: float = 2.0  # how often switches flipped in the store are picked up
    audit_queue_size: Annotated[int, Field(ge=1)] = 10_000  # records waiting; a full queue waits
    audit_batch_size: Annotated[int, Field(ge=1)] = 500

    # Settings of a shape corral would refuse later (at start-up, with a traceback) are
    # refused here, by the same checks, so `corral serve` says so in one line.

    @field_validator("data_dir", "runc_root")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Taken from where corral starts: a thread that enters another mount namespace
        # (runc's start, runtime/launchns.py) has that namespace's root as its directory.
        return value.absolute()

    @field_validator("api_key")
    @classmethod
    def _api_key_shape(cls, value: str | None) -> str | None:
        if value is not None:
            from corral.domain.accounts import key_parts
            from corral.errors import CorralError

            try:
                key_parts(value)
            except CorralError as exc:
                raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _defaults_within_maximums(self) -> Settings:
        for default, maximum in (("default_memory_mb", "max_memory_mb"), ("default_disk_mb", "max_disk_mb")):
            if getattr(self, default) > getattr(self, maximum):
                limit = f"CORRAL_{maximum.upper()} ({getattr(self, maximum)})"
                raise ValueError(f"CORRAL_{default.upper()} must be at most {limit}")
        return self

    @model_validator(mode="after")
    def _owner_uids_apart(self) -> Settings:
        owners = range(self.userns_owner_base, self.userns_owner_base + self.userns_owner_count)
        if owners.stop > (1 << 32) - 1:
            raise ValueError("CORRAL_USERNS_OWNER_BASE + CORRAL_USERNS_OWNER_COUNT must be below 4294967295")
        if owners.start < self.uid_base + self.uid_count and self.uid_base < owners.stop:
            raise ValueError(
                "CORRAL_USERNS_OWNER_BASE..+CORRAL_USERNS_OWNER_COUNT must not overlap "
                "CORRAL_UID_BASE..+CORRAL_UID_COUNT"
            )
        return self

    @field_validator("network_pool")
    @classmethod
    def _network_pool_shape(cls, value: str) -> str:
        from corral.errors import CorralError
        from corral.network.pool import AddressPool

        try:
            AddressPool(value)
        except CorralError as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator("network_dns_upstreams")
    @classmethod
    def _upstreams_shape(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            from corral.network.resolver import parse_upstream

            for upstream in value:
                parse_upstream(upstream)  # ValueError naming it
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_shape(cls, value: str | None) -> str | None:
        if value is not None:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError, NoSuchModuleError

            try:
                make_url(value).get_dialect()
            except (ArgumentError, NoSuchModuleError, ValueError) as exc:
                raise ValueError(f"not a database URL corral can use ({exc})") from None
        return value

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'corral.db'}"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def templates_dir(self) -> Path:
        return self.data_dir / "templates"

    @property
    def sandboxes_dir(self) -> Path:
        return self.data_dir / "sandboxes"
