"""A client's path under the workspace (services/workspace.py): relative or absolute,
never out of it."""

from __future__ import annotations

import pytest

from corral.errors import InvalidInput
from corral.services.workspace import WORKSPACE, path, relative


@pytest.mark.parametrize(
    ("given", "taken"),
    [
        ("a.txt", f"{WORKSPACE}/a.txt"),
        ("./dir/../b", f"{WORKSPACE}/b"),
        (".", WORKSPACE),
        ("/etc/passwd", f"{WORKSPACE}/etc/passwd"),  # absolute: under the workspace too
        (f"{WORKSPACE}/x/y", f"{WORKSPACE}/x/y"),  # already in it: as it is
        (WORKSPACE, WORKSPACE),
        ("/", WORKSPACE),
    ],
)
def test_paths_are_taken_under_the_workspace(given: str, taken: str) -> None:
    assert path(given) == taken


@pytest.mark.parametrize(
    "given", ["../x", "/../x", "a/../../x", f"{WORKSPACE}/../secret", "", None, "a\0b", 5, "x" * 5000]
)
def test_paths_that_leave_or_are_malformed(given: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        path(given, "cwd")
    assert refused.value.field == "cwd"


def test_relative_names_what_the_client_named() -> None:
    assert relative(f"{WORKSPACE}/a/b") == "a/b"
    assert relative("/tmp/x") == "/tmp/x"
