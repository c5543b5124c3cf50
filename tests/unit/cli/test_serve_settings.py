"""``corral serve`` with a setting of a shape corral refuses: one line naming the
setting (its ``CORRAL_*`` variable) and what it must look like, a non-zero exit, no
traceback, and nothing started (issue 9: a bad ``CORRAL_API_KEY`` stopped ``make run``
with a traceback)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli.main import app
from corral.settings import Settings
from tests.support.process import CORRAL
from tests.unit.cli.test_template_and_serve import fake_server

runner = CliRunner()

BAD = [
    ("CORRAL_API_KEY", "ek_short", "API key must look like ek_<id>_<secret>"),
    ("CORRAL_API_KEY", "not-a-key", "API key must look like ek_<id>_<secret>"),
    ("CORRAL_PORT", "http", "Input should be a valid integer"),
    ("CORRAL_PORT", "70000", "less than or equal to 65535"),
    ("CORRAL_JWT_SECRET", "short", "at least 32 characters"),
    ("CORRAL_RUNTIME", "docker", "'runc' or 'process'"),
    ("CORRAL_NETWORK_POOL", "10.0.0.0/33", "is not a network"),
    ("CORRAL_NETWORK_POOL", "10.9.0.0/30", "/29 or larger"),
    ("CORRAL_NETWORK_POOL", "fd00::/64", "IPv4"),
    ("CORRAL_DATABASE_URL", "mongodb://x", "not a database URL"),
    ("CORRAL_UID_BASE", "0", "greater than or equal to 65536"),  # container root = host root
    ("CORRAL_MAX_CPU_COUNT", "0", "greater than or equal to 1"),
    ("CORRAL_DEFAULT_MEMORY_MB", "4096", "at most CORRAL_MAX_MEMORY_MB"),
    ("CORRAL_GATEWAY_CORS_ORIGINS", "https://a.example", "must be JSON"),
    ("CORRAL_NETWORK_BRIDGE", "bridge-name-too-long", "should match pattern"),  # an interface name
    ("CORRAL_NETWORK_DNS_UPSTREAMS", '["dns.example"]', "not an upstream DNS server address"),
    ("CORRAL_NETWORK_NFLOG_GROUP", "70000", "less than or equal to 65535"),
]


@pytest.mark.parametrize(("name", "value", "says"), BAD, ids=[f"{n}={v}" for n, v, _ in BAD])
def test_a_bad_setting_is_one_line_naming_it(
    name: str, value: str, says: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = fake_server(monkeypatch)
    monkeypatch.setenv(name, value)
    result = runner.invoke(app, ["serve", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in result.output
    assert line.startswith(f"error: invalid settings: {name}") and says in line, line
    assert calls == []


def test_the_real_command_refuses_a_bad_api_key_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "CORRAL_RUNTIME": "process", "CORRAL_API_KEY": "ek_x_y"}
    proc = subprocess.run(
        [CORRAL, "serve", "--data-dir", str(tmp_path), "--port", "1"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: invalid settings: CORRAL_API_KEY: API key must look like")
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing served


def test_a_relative_data_dir_and_runc_root_are_taken_from_where_corral_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # runc starts from a thread in another mount namespace, whose root is its directory
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=Path("data"), runc_root=Path("run/runc"))
    assert (settings.data_dir, settings.runc_root) == (tmp_path / "data", tmp_path / "run/runc")
    assert settings.sandboxes_dir.is_absolute()
