"""Tenancy of templates: a Dockerfile template is its org's alone.

``alpha`` (the victim here) builds one template, ``app``, with a secret in its ENV and
in a file; ``beta`` (the attacker) tries every way to reach it: by name and by id, on
every template route, as the template of a create, as the ``FROM`` of a build of its
own. Every attempt must answer what a name nobody has answers, say nothing of alpha's
template, sandboxes or checkpoints, and leave alpha's template working and deletable.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from corral.runtime.templates import RECIPES
from tests.security.conftest import SecurityServer, Tenant

SECRET = "alpha-template-secret-3f9c"
DOCKERFILE = f"FROM base\nENV APP_SECRET={SECRET}\nRUN echo {SECRET} > /baked.txt\n"


@dataclass(frozen=True)
class Built:
    name: str
    id: str


def build(tenant: Tenant, name: str, dockerfile: str) -> httpx.Response:
    with tenant.http() as http:
        return http.post("/templates", json={"name": name, "dockerfile": dockerfile}, timeout=600)


@pytest.fixture(scope="module")
def alpha_app(alpha: Tenant) -> Iterator[Built]:
    """alpha's template ``app`` (built once for the module), removed at the end."""
    answer = build(alpha, "app", DOCKERFILE)
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "ready", answer.json()
    yield Built("app", answer.json()["templateID"])
    with alpha.http() as http:
        http.delete("/templates/app")


def leaks(answer: httpx.Response, *secrets: str) -> bool:
    return any(s in answer.text for s in secrets)


def test_another_orgs_template_is_not_found_on_every_route(
    alpha: Tenant, beta: Tenant, alpha_app: Built, security_server: SecurityServer
) -> None:
    with beta.http() as http:
        for name in (alpha_app.name, alpha_app.id):
            hidden = (SECRET,) if name == alpha_app.id else (alpha_app.id, SECRET)  # beta's own words aside
            answers = [
                http.get(f"/templates/{name}"),
                http.delete(f"/templates/{name}"),
                http.post("/sandboxes", json={"templateID": name}),
            ]
            assert [a.status_code for a in answers] == [404, 404, 404], [a.text for a in answers]
            assert not any(leaks(a, *hidden) for a in answers)
            nobody = http.post("/sandboxes", json={"templateID": "nobody-has-this"})
            assert answers[2].json()["error"] == nobody.json()["error"].replace("nobody-has-this", name)
        listed = http.get("/templates").json()
    assert {t["name"] for t in listed} == set(RECIPES)  # the built-ins alone
    # the victim noticed nothing: its template is listed, gets, and makes sandboxes with its secret
    with alpha.http() as http:
        assert http.get("/templates/app").json()["templateID"] == alpha_app.id
    sandbox = alpha.create(templateID="app")["sandboxID"]
    try:
        seen = alpha.run(sandbox, "echo $APP_SECRET; cat /baked.txt")["stdout"].split()
        assert seen == [SECRET, SECRET]
    finally:
        alpha.kill(sandbox)
    assert security_server.healthy()


def test_names_are_per_org_and_from_means_ones_own(
    alpha: Tenant, beta: Tenant, alpha_app: Built, security_server: SecurityServer
) -> None:
    """beta builds on ``FROM app`` (alpha's name) and on alpha's template id: neither is
    alpha's template. Then beta builds an ``app`` of its own: both orgs have one, and
    each sees and runs its own."""
    for base in (alpha_app.name, alpha_app.id):
        answer = build(beta, "probe", f"FROM {base}\nRUN cat /baked.txt\n")
        assert answer.status_code in (201, 400, 404), answer.text
        assert answer.status_code != 201 or answer.json()["status"] == "failed", answer.text
        assert not leaks(answer, SECRET, *(() if base == alpha_app.id else (alpha_app.id,)))
    own = build(beta, "app", "FROM base\nENV APP_SECRET=beta-own\n")
    try:
        assert own.status_code == 201 and own.json()["status"] == "ready", own.text
        assert own.json()["templateID"] != alpha_app.id
        sandbox = beta.create(templateID="app")["sandboxID"]
        try:
            got = beta.run(sandbox, "echo $APP_SECRET; test -e /baked.txt && cat /baked.txt")
            assert got["stdout"].split() == ["beta-own"], got
        finally:
            beta.kill(sandbox)
        with beta.http() as http:
            mine = [t["templateID"] for t in http.get("/templates").json() if t["name"] == "app"]
            assert mine == [own.json()["templateID"]]
    finally:
        with beta.http() as http:
            for name in ("app", "probe"):
                http.delete(f"/templates/{name}")
    with alpha.http() as http:
        assert http.get("/templates/app").json()["templateID"] == alpha_app.id
    assert security_server.healthy()


def test_the_builders_own_store_is_not_reachable_from_a_dockerfile(
    alpha: Tenant, beta: Tenant, alpha_app: Built, security_server: SecurityServer
) -> None:
    """The builder's image store holds every template a build imported (alpha's too,
    once alpha builds on it). buildah finds an image there by any unique prefix of its
    id, and by a short name under ``localhost/``: beta tries each first hex digit, and
    corral's own image names. Each build fails before anything runs."""
    attempts = [f"FROM {digit}\nRUN true\n" for digit in "0123456789abcdef"]
    attempts += [
        f"FROM corral-template/{alpha_app.id}:latest\n",
        "FROM corral-template/base:latest\n",
        "FROM base\nCOPY --from=corral-build/x:1 /etc/hostname /x\n",
        "FROM base\nCOPY --from=7 /etc/hostname /x\n",
        "FROM base\nRUN --mount=type=bind,from=b,target=/x true\n",
    ]
    try:
        for dockerfile in attempts:
            answer = build(beta, "probe", dockerfile)  # a Dockerfile refused is a failed build
            assert answer.status_code == 201, answer.text
            assert answer.json()["status"] == "failed", (dockerfile, answer.text)
            assert "builder's own store" in answer.json()["error"], (dockerfile, answer.text)
    finally:
        with beta.http() as http:
            http.delete("/templates/probe")
    with alpha.http() as http:
        assert http.get("/templates/app").json()["status"] == "ready"
    assert security_server.healthy()


def test_a_delete_names_only_the_orgs_own_users(
    alpha: Tenant, beta: Tenant, alpha_app: Built, bystander_box: str, security_server: SecurityServer
) -> None:
    """No other org's sandbox or checkpoint ever holds alpha's template (the creates
    above were refused), so alpha's delete is refused only while a sandbox of its own
    uses it, naming that one alone, and then works."""
    users = alpha.create(templateID="app")["sandboxID"]
    try:
        with alpha.http() as http:
            refused = http.delete("/templates/app")
        assert refused.status_code == 409 and users in refused.json()["error"], refused.text
        assert refused.json()["error"].count("sb-") == 1 and "cp-" not in refused.json()["error"]
    finally:
        alpha.kill(users)
    with alpha.http() as http:
        deleted = http.delete("/templates/app")
        assert deleted.status_code == 204, deleted.text
        assert http.get("/templates/app").status_code == 404
    assert beta.run(bystander_box, "echo alive")["stdout"].strip() == "alive"
    assert security_server.healthy()
