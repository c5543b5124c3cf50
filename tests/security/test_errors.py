"""Bad input and errors (issue 9, "Also seen"): every failure is one a client can tell.

A file read that fails part-way is seen to fail (a declared length the body falls
short of, the connection cut), never a complete-looking 200; a full disk is 507, not
the 429 SDKs retry; reading a device or a FIFO is a 400 naming ``path``; a listing
of a huge directory says there is more (and pages); the README's own ``curl -d``
without a JSON content type works; and bad input on every route is a 4xx naming the
field, never a 500. Each test does it for real on runc, then checks that the server
and the other org's sandbox did not notice.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from tests.security.conftest import SecurityServer, Tenant

BIG = 64 << 20  # far more than every buffer between the file and the client holds


def test_a_read_that_fails_part_way_is_seen_to_fail(
    alpha: Tenant, attacker_box: str, unnoticed: Callable[[], None]
) -> None:
    path = "/root/shrinking.bin"
    made = alpha.run(attacker_box, f"head -c {BIG} /dev/urandom > {path} && stat -c %s {path}")
    assert made["stdout"].strip() == str(BIG), made
    got = 0
    try:
        with alpha.http() as http, pytest.raises(httpx.RemoteProtocolError):
            url = f"/sandboxes/{attacker_box}/files"
            with http.stream("GET", url, params={"path": path}) as answer:
                assert answer.status_code == 200
                assert answer.headers["content-length"] == str(BIG)  # declared up front
                for chunk in answer.iter_bytes():
                    if not got:  # the file shrinks under the read
                        assert alpha.run(attacker_box, f"truncate -s 1M {path}")["exitCode"] == 0
                    got += len(chunk)
        assert 0 < got < BIG
    finally:
        alpha.run(attacker_box, f"rm -f {path}")
    unnoticed()


def test_a_read_that_fails_at_once_is_an_error_status(
    alpha: Tenant, attacker_box: str, unnoticed: Callable[[], None]
) -> None:
    # /proc/1/mem is a regular file whose first read fails (EIO at address 0)
    with alpha.http() as http:
        answer = http.get(f"/sandboxes/{attacker_box}/files", params={"path": "/proc/1/mem"})
    assert answer.status_code >= 400 and answer.status_code != 200
    assert "error" in answer.json()
    unnoticed()


def test_a_file_that_grows_during_the_read_is_sent_as_it_was(alpha: Tenant, attacker_box: str) -> None:
    path = "/root/growing.log"
    alpha.run(attacker_box, f"head -c {BIG} /dev/zero > {path}")
    try:
        got = 0
        with alpha.http() as http:
            url = f"/sandboxes/{attacker_box}/files"
            with http.stream("GET", url, params={"path": path}) as answer:
                for chunk in answer.iter_bytes():
                    if not got:
                        alpha.run(attacker_box, f"head -c 1000000 /dev/zero >> {path}")
                    got += len(chunk)
        assert got == BIG
    finally:
        alpha.run(attacker_box, f"rm -f {path}")


def test_a_full_disk_is_507_not_429(alpha: Tenant, unnoticed: Callable[[], None]) -> None:
    box = alpha.create(diskMB=128)["sandboxID"]
    try:
        filled = alpha.run(box, "dd if=/dev/zero of=/root/fill bs=1M 2>&1; df -k / | tail -1")
        assert "No space left" in filled["stdout"], filled
        with alpha.http() as http:
            url = f"/sandboxes/{box}/files"
            answer = http.put(url, params={"path": "/root/more.bin"}, content=b"x" * (4 << 20))
            assert answer.status_code == 507, answer.text
            assert "No space left on device" in answer.json()["error"]
            assert "retry-after" not in answer.headers
            assert alpha.run(box, "rm /root/fill")["exitCode"] == 0  # room again: it works
            again = http.put(url, params={"path": "/root/more.bin"}, content=b"x" * (4 << 20))
            assert again.status_code == 204, again.text
    finally:
        alpha.kill(box)
    unnoticed()


@pytest.mark.parametrize("path", ["/dev/tty", "/dev/null", "/dev/zero", "/dev/ptmx", "/root/fifo", "/etc"])
def test_reading_what_is_not_a_regular_file_is_a_400_naming_path(
    path: str, alpha: Tenant, attacker_box: str, security_server: SecurityServer
) -> None:
    alpha.run(attacker_box, "[ -p /root/fifo ] || mkfifo /root/fifo")
    with alpha.http() as http:
        answer = http.get(f"/sandboxes/{attacker_box}/files", params={"path": path}, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith(f"path: {path}: ")
    assert security_server.healthy()


def test_a_huge_directory_is_listed_in_pages_that_say_so(
    alpha: Tenant, attacker_box: str, unnoticed: Callable[[], None]
) -> None:
    made = alpha.run(
        attacker_box, "mkdir -p /root/many && cd /root/many && seq -w 1 25000 | xargs touch && ls | wc -l"
    )
    assert made["stdout"].strip() == "25000", made
    names: list[str] = []
    pages = 0
    try:
        with alpha.http() as http:
            url: str | None = f"{alpha.server.url}/api/sandboxes/{attacker_box}/files/list?path=/root/many"
            while url is not None:
                answer = http.get(url)
                assert answer.status_code == 200, answer.text
                page = answer.json()
                assert isinstance(page, list) and len(page) <= 10_000  # the spec's bare array
                names += [entry["name"] for entry in page]
                pages += 1
                following = answer.links.get("next", {}).get("url")
                assert (following is None) == ("x-next-cursor" not in answer.headers)
                url = following
            cut = http.get(f"/sandboxes/{attacker_box}/files/list", params={"path": "/root/many", "limit": 3})
            assert [e["name"] for e in cut.json()] == ["00001", "00002", "00003"]
            rest = http.get(
                f"/sandboxes/{attacker_box}/files/list",
                params={"path": "/root/many", "limit": 2, "cursor": cut.headers["x-next-cursor"]},
            )
            assert [e["name"] for e in rest.json()] == ["00004", "00005"]
    finally:
        alpha.run(attacker_box, "rm -rf /root/many")
    assert pages == 3 and names == [f"{i:05d}" for i in range(1, 25001)]
    unnoticed()


def test_the_readmes_curl_without_a_json_content_type_creates(
    alpha: Tenant, security_server: SecurityServer
) -> None:
    body = json.dumps({"templateID": "base", "metadata": {"from": "curl -d"}})
    made: list[str] = []
    try:
        with alpha.http() as http:
            for content_type in ("application/x-www-form-urlencoded", None, "text/plain;charset=UTF-8"):
                headers = {"Content-Type": content_type} if content_type else {}
                answer = http.post("/sandboxes", content=body, headers=headers)
                assert answer.status_code == 201, (content_type, answer.text)
                made.append(answer.json()["sandboxID"])
                assert answer.json()["metadata"] == {"from": "curl -d"}
            bad = http.post(
                "/sandboxes",
                content=b"templateID=base",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
        token = httpx.post(
            f"{security_server.url}/api/v1/auth/token",
            content=json.dumps({"api_key": alpha.key}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert token.status_code == 200 and token.json()["token"], token.text
    finally:
        for sandbox_id in made:
            alpha.kill(sandbox_id)


BAD_BODIES: list[tuple[str, str, bytes, str]] = [
    ("POST", "/sandboxes", b"{not json", "not valid JSON"),
    ("POST", "/sandboxes", b"[]", "JSON object"),
    ("POST", "/sandboxes", b'{"cpuCount": "lots"}', "cpuCount"),
    ("POST", "/sandboxes", b'{"cpuCount": 99999999999999999999999}', "cpuCount"),
    ("POST", "/sandboxes", b'{"memoryMB": -1}', "memoryMB"),
    ("POST", "/sandboxes", b'{"diskMB": 1e400}', "diskMB"),
    ("POST", "/sandboxes", b'{"timeout": -5}', "timeout"),
    ("POST", "/sandboxes", b'{"envs": {"A": 1}}', "envs"),
    ("POST", "/sandboxes", b'{"templateID": "../../etc"}', "template"),
    ("POST", "/sandboxes", b'{"metadata": "x"}', "metadata"),
    ("POST", "/sandboxes", b'{"metadata": {"k": "\\ud800"}}', "metadata"),  # was stored, then 500s
    ("POST", "/sandboxes", b'{"envs": {"\\udfff": "x"}}', "envs"),
    ("POST", "{box}/exec/run", b'{"cmd": "echo", "args": ["\\ud800"]}', "args"),
    ("POST", "{box}/exec/run", b'{"cmd": ["sh"]}', "cmd"),
    ("POST", "{box}/exec/run", b'{"cmd": "true", "timeout": 1e999}', "timeout"),
    ("POST", "{box}/timeout", b'{"timeout": -1}', "timeout"),
    ("POST", "{box}/pty", b'{"cols": -1, "rows": 99999999}', "cols"),
    ("PUT", "{box}/network", b'{"mode": "open sesame"}', "mode"),
    ("POST", "{box}/preview", b'{"port": 70000}', "port"),
]


def test_bad_input_is_a_4xx_naming_the_field_on_every_route(
    alpha: Tenant, attacker_box: str, unnoticed: Callable[[], None]
) -> None:
    failures: list[tuple[object, ...]] = []
    with alpha.http() as http:
        for method, route, body, field in BAD_BODIES:
            url = route.replace("{box}", f"/sandboxes/{attacker_box}")
            answer = http.request(method, url, content=body, headers={"Content-Type": "application/json"})
            error = (
                answer.json().get("error", "")
                if answer.headers["content-type"].startswith("application/json")
                else ""
            )
            if not (400 <= answer.status_code < 500 and field in error):
                failures.append((method, route, body, answer.status_code, answer.text[:200]))
        for weird in ("..%2F..%2Fetc", "sb-" + "x" * 400, "%00", "sb-\u202e"):
            answer = http.get(f"/sandboxes/{weird}/files", params={"path": "/etc/hostname"})
            if answer.status_code != 404:
                failures.append(("GET", weird, b"", answer.status_code, answer.text[:200]))
        cases: list[tuple[dict[str, str | int], str]] = [
            ({"path": "/root", "limit": -1}, "limit"),
            ({"path": "/root", "limit": "ten"}, "limit"),
            ({"path": "/root", "cursor": "%%%"}, "cursor"),
            ({"path": "a" * 5000}, "path"),
            ({"path": "/etc/hostname"}, "path"),  # not a directory
        ]
        for params, field in cases:
            answer = http.get(f"/sandboxes/{attacker_box}/files/list", params=params)
            if not (answer.status_code == 400 and field in answer.json()["error"]):
                failures.append(("GET", "files/list", params, answer.status_code, answer.text[:200]))
    assert failures == []
    with alpha.http() as http:
        listed = http.get("/sandboxes")  # nothing half-made by a refused create breaks the listing
    assert listed.status_code == 200, listed.text
    unnoticed()
