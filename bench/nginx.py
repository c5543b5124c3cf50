"""nginx as a reference reverse proxy for the gateway benchmark: a C proxy in the same
position as corral's gateway (between the load generator and the server in the
sandbox), so a run shows what any proxy costs on this machine, not only ours.

``binary()`` finds ``nginx`` on PATH, or unpacks Debian's package (``apt-get download``,
``dpkg -x``, nothing installed system-wide, no service started) into ``.cache/bench``.
``Nginx`` runs one master and one worker (the gateway is one process too), keep-alive to
the upstream, no logs, upstream CORS headers hidden as the gateway does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench" / "nginx"


def binary() -> str | None:
    """The nginx binary, unpacked from Debian's package if need be; None if neither works."""
    found = shutil.which("nginx") or (
        str(CACHE / "usr/sbin/nginx") if (CACHE / "usr/sbin/nginx").exists() else None
    )
    if found:
        return found
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        return None
    download = CACHE.parent / "download"
    download.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["apt-get", "download", "nginx"], cwd=download, check=True, capture_output=True, timeout=120
        )
        for deb in download.glob("nginx_*.deb"):
            subprocess.run(["dpkg", "-x", str(deb), str(CACHE)], check=True, capture_output=True, timeout=60)
    except (subprocess.SubprocessError, OSError):
        return None
    path = CACHE / "usr/sbin/nginx"
    return str(path) if path.exists() else None


class Nginx:
    """nginx proxying ``listen port -> address:upstream port`` for each pair given."""

    def __init__(self, nginx: str, workdir: Path, routes: dict[int, int], address: str = "127.0.0.1") -> None:
        self.nginx = nginx
        self.dir = workdir
        self.routes = routes
        self.address = address
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.dir.mkdir(parents=True, exist_ok=True)
        temp = "".join(
            f"{kind}_temp_path {self.dir}/{kind};" for kind in ("proxy", "fastcgi", "uwsgi", "scgi")
        )
        servers = "".join(
            f"upstream u{up} {{ server {self.address}:{up}; keepalive 64; }}"
            f"server {{ listen 127.0.0.1:{listen}; location / {{ proxy_pass http://u{up};"
            ' proxy_http_version 1.1; proxy_set_header Connection "";'
            " proxy_hide_header Access-Control-Allow-Origin; }}"
            for listen, up in self.routes.items()
        )
        conf = self.dir / "nginx.conf"
        conf.write_text(
            f"daemon off; worker_processes 1; pid {self.dir}/nginx.pid; error_log {self.dir}/error.log;"
            f" events {{ worker_connections 1024; }}"
            f" http {{ access_log off; client_body_temp_path {self.dir}/body; {temp} {servers} }}\n"
        )
        self.proc = subprocess.Popen(
            [self.nginx, "-c", str(conf), "-p", str(self.dir), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx did not start: {(self.dir / 'error.log').read_text()[-500:]}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
