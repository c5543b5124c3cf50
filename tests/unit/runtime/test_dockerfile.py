"""Reading Dockerfiles before the builder: checks, corral bases, heredoc rewriting."""

from __future__ import annotations

import json

import pytest

from corral.errors import InvalidInput
from corral.runtime.dockerfile import parse

KNOWN = frozenset({"base", "python", "nodejs"})


def test_from_a_corral_template_is_rewritten_but_a_stage_or_registry_image_is_not() -> None:
    parsed = parse(
        "# syntax=docker/dockerfile:1\n"
        "ARG X=1\n"
        "FROM python AS build\n"
        "RUN echo hi\n"
        "FROM build\n"
        "FROM --platform=linux/amd64 debian:bookworm\n"
        "COPY --from=build /a /b\n"
    )
    assert parsed.bases(KNOWN) == ["python"]
    text, files = parsed.render({"python": "localhost/corral-template/python:abc"})
    assert text.splitlines() == [
        "ARG X=1",
        "FROM localhost/corral-template/python:abc AS build",
        "RUN echo hi",
        "FROM build",
        "FROM --platform=linux/amd64 debian:bookworm",
        "COPY --from=build /a /b",
    ]
    assert files == {}


def test_copy_heredocs_become_context_files_named_after_the_delimiter() -> None:
    parsed = parse(
        "FROM base\nCOPY <<EOT /etc/motd\nhello\n  there\nEOT\nCOPY <<a <<-'b' /dir/\none\na\n\ttwo\n\tb\n"
    )
    text, files = parsed.render({"base": "img"})
    lines = text.splitlines()
    assert lines[0] == "FROM img"
    assert lines[1] == "COPY .corral-heredocs/1/EOT /etc/motd"
    assert lines[2] == "COPY .corral-heredocs/2/a .corral-heredocs/2/b /dir/"
    assert files == {
        ".corral-heredocs/1/EOT": "hello\n  there\n",
        ".corral-heredocs/2/a": "one\n",
        ".corral-heredocs/2/b": "two\n",
    }


def test_run_heredocs_become_exec_form_shell_scripts() -> None:
    parsed = parse(
        "FROM base\nRUN <<EOF\nset -e\necho a > /a\nEOF\nRUN --network=none python3 <<PY\nprint(1)\nPY\n"
    )
    text, _ = parsed.render({})
    first, second = text.splitlines()[1:]
    assert first.startswith("RUN [") and json.loads(first[4:]) == ["/bin/sh", "-c", "set -e\necho a > /a\n"]
    flag, form = second[4:].split(" ", 1)
    assert flag == "--network=none"
    assert json.loads(form) == ["/bin/sh", "-c", "python3 <<PY\nprint(1)\nPY\n"]


def test_continuations_and_comments_are_kept_as_written() -> None:
    source = "FROM base\nENV A=1 \\\n# a comment inside\n    B=2\nRUN echo \\\n  hi\n"
    text, _ = parse(source).render({})
    assert text == "FROM base\nENV A=1 \\\n# a comment inside\n    B=2\nRUN echo \\\n  hi\n"


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("", "has no instructions"),
        ("# only a comment\n", "has no instructions"),
        ("RUN echo hi\n", "line 1: the first instruction must be FROM"),
        ("FROM base\nFROBNICATE x\n", "line 2: unknown instruction 'FROBNICATE'"),
        ("FROM base\nCOPY app.py /app/\n", "line 2: COPY app.py: the build context is empty"),
        ("FROM base\nCOPY <<EOF /x\nnever closed\n", "line 2: heredoc 'EOF' is not closed"),
        ("FROM\n", "line 1: FROM needs an image"),
        ("FROM base\nADD\n", "line 2: ADD needs a source and a destination"),
    ],
)
def test_what_is_refused_names_the_line(source: str, says: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse(source)
    assert err.value.field == "dockerfile" and says in err.value.message


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (
            "FROM base\nADD https://example.com/x.tar.gz /opt/\n",
            "line 2: ADD https://example.com/x.tar.gz: the builder would fetch it from the host",
        ),
        (
            "FROM base\nADD HTTP://10.0.0.1:8080/ /x\n",
            "line 2: ADD HTTP://10.0.0.1:8080/: the builder would fetch",
        ),
        (
            "FROM base\nRUN --mount=type=cache,target=/root/.cache pip install x\n",
            "line 2: RUN --mount=type=cache",
        ),
    ],
)
def test_what_the_builder_would_do_on_the_host_is_refused(source: str, says: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse(source)
    assert err.value.field == "dockerfile" and says in err.value.message


REGISTRIES = ("docker.io", "ghcr.io")


@pytest.mark.parametrize(
    "source",
    [
        "FROM base\nRUN true\n",
        "FROM debian:bookworm\n",
        "FROM library/debian@sha256:abc\n",
        "FROM ghcr.io/owner/image:1 AS one\nFROM scratch\nCOPY --from=one /a /b\nCOPY --from=0 /a /c\n",
        "FROM base AS b\nRUN --mount=type=bind,from=b,source=/etc,target=/x true\n",
        "FROM --platform=linux/amd64 DOCKER.IO/library/python:3\n",
    ],
)
def test_pulls_from_listed_registries_stages_and_corral_bases_pass(source: str) -> None:
    parse(source).check_pulls(frozenset({"base"}), REGISTRIES)


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (
            "FROM 10.213.0.1:8080/x\n",
            "line 1: 10.213.0.1:8080/x: images are pulled only from docker.io, ghcr.io",
        ),
        ("FROM localhost/corral-template/other:0123\n", "line 1: localhost/corral-template/other:0123"),
        ("FROM quay.io/x/y\n", "line 1: quay.io/x/y"),
        ("FROM base\nCOPY --from=169.254.169.254/latest /a /b\n", "line 2: 169.254.169.254/latest"),
        (
            "FROM base\nRUN --mount=type=bind,from=registry.local:5000/x,target=/x true\n",
            "line 2: registry.local:5000/x",
        ),
        ("ARG IMAGE=10.0.0.1/x\nFROM $IMAGE\n", "line 2: $IMAGE: an image named by a variable"),
        # the builder's own store holds every org's imported templates: no id, no corral image
        ("FROM b0\n", "line 1: b0: names an image of the builder's own store"),
        ("FROM 0\n", "line 1: 0: names an image of the builder's own store"),
        ("FROM b0758e254b9a:latest\n", "line 1: b0758e254b9a:latest: names an image"),
        ("FROM sha256:b0758e254b9a\n", "line 1: sha256:b0758e254b9a: names an image"),
        ("FROM corral-template/tpl-x:0123\n", "line 1: corral-template/tpl-x:0123: names an image"),
        ("FROM base\nCOPY --from=corral-build/x:1 /a /b\n", "line 2: corral-build/x:1: names an image"),
        ("FROM base\nCOPY --from=1 /a /b\n", "line 2: 1: names an image"),  # no stage 1
        ("FROM base\nRUN --mount=type=bind,from=abc,target=/x true\n", "line 2: abc: names an image"),
    ],
)
def test_pulls_from_other_registries_are_refused_naming_the_line(source: str, says: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse(source).check_pulls(frozenset({"base"}), REGISTRIES)
    assert err.value.field == "dockerfile" and says in err.value.message
