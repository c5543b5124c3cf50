"""Fixtures for tests against real runc (marked ``integration``; they need root).

The data dir is kept between runs so the ``base`` template (a ~20 s mmdebstrap build)
is built once per machine, not once per run: ``CORRAL_TEST_DATA_DIR``, default
``/var/tmp/corral-test-data``. The runc state root is this suite's own
(``/run/corral-test/runc``) so a corral server on the same machine is never touched.
Every sandbox a test makes through ``sandboxes`` is destroyed when the test ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from corral.domain import Limits, SandboxSpec, Template
from corral.runtime.runc import RuncRuntime
from corral.runtime.templates import TemplateStore
from corral.settings import Settings

DATA_DIR = Path(os.environ.get("CORRAL_TEST_DATA_DIR", "/var/tmp/corral-test-data"))
RUNC_ROOT = Path("/run/corral-test/runc")

CreateFn = Callable[..., Awaitable[str]]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("runc", "mmdebstrap", "mkfs.ext4"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


@pytest.fixture(scope="session")
def settings() -> Settings:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    return Settings(data_dir=DATA_DIR, runc_root=RUNC_ROOT)


@pytest.fixture(scope="session")
def base_template(settings: Settings) -> Template:
    """The ``base`` template, built on first use and kept in DATA_DIR. (Run on a thread
    of its own: the first user may be an async fixture, inside a running loop.)"""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, TemplateStore(settings).get("base")).result()


@pytest.fixture
def runtime(settings: Settings) -> RuncRuntime:
    return RuncRuntime(settings)


def new_id() -> str:
    return "sb-t" + secrets.token_hex(6)


@pytest.fixture
async def sandboxes(runtime: RuncRuntime, base_template: Template) -> AsyncIterator[CreateFn]:
    """``await sandboxes(**limits, envs=...)`` creates a sandbox on ``base`` and returns
    its id; all of them are destroyed at the end of the test."""
    made: list[str] = []

    async def create(*, envs: dict[str, str] | None = None, **limits: int) -> str:
        sandbox_id = new_id()
        made.append(sandbox_id)
        await runtime.create(SandboxSpec(sandbox_id, base_template, Limits(**limits), envs or {}))
        return sandbox_id

    yield create
    for sandbox_id in made:
        await runtime.destroy(sandbox_id)
