"""File names that are not UTF-8 are listed, not a 500 (mapping.shown)."""

from __future__ import annotations

import json

from corral.api.opencomputer.mapping import entry_out, shown
from corral.domain import FileEntry


def test_names_that_are_not_utf8_become_replacement_characters() -> None:
    raw = b"bad\xff\xfename".decode("utf-8", "surrogateescape")
    assert shown(raw) == "bad\ufffd\ufffdname"
    assert shown("plain é") == "plain é"
    assert shown("lone \ud800 surrogate") == "lone ? surrogate"


def test_an_entry_with_such_a_name_serialises() -> None:
    raw = b"dir/bad\xff".decode("utf-8", "surrogateescape")
    entry = FileEntry(name="bad\udcff", is_dir=False, size=0, path=f"/root/{raw}")
    out = json.loads(entry_out(entry).model_dump_json())
    assert out["name"] == "bad\ufffd" and out["path"] == "/root/dir/bad\ufffd"
