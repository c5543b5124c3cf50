"""Settings, from flags or ``CORRAL_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    data_dir: Path = Path("/var/lib/corral")
    database_url: str | None = None  # default: SQLite at <data_dir>/corral.db
    api_key: str | None = None  # seeds the first owner key when the store is empty
    public_url: str | None = None  # what clients use to reach us; default http://host:port

    runtime: str = "runc"  # "runc" (real isolation) or "process" (tests only: no isolation)
    oci_runtime: str = "runc"  # OCI binary: runc, runsc, kata-runtime
    runc_root: Path = Path("/run/corral/runc")

    # user namespace: container root is host uid/gid `uid_base`, `uid_count` ids mapped
    uid_base: int = 100000
    uid_count: int = 65536

    default_template: str = "base"
    default_timeout_s: int = 300
    max_cpu_count: int = 4
    max_memory_mb: int = 2048
    default_memory_mb: int = 512
    default_disk_mb: int = 2048
    max_disk_mb: int = 20480
    pids_limit: int = 512

    worker_token_ttl_s: int = 3600
    exec_output_limit: int = 16 * 1024 * 1024  # bytes kept per stream of exec/run
    reaper_interval_s: float = 5.0

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
