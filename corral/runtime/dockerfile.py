"""Read a Dockerfile before the builder sees it: check it, find its corral bases, and
turn heredocs into something the builder understands.

What is checked (InvalidInput naming ``dockerfile``, with the line number): there are
instructions, they are Dockerfile instructions, the first one (after ``ARG``) is
``FROM``, heredocs are closed, and ``COPY``/``ADD`` take their sources from heredocs,
or from another stage (``--from=``): the build context is empty, since a template is
built from the Dockerfile text alone. Refused too, since buildah would do it on the
host's side, outside the build's confinement (``confinement.py``): ``ADD <url>``
(buildah fetches it from the host; fetch it in a ``RUN`` step, which runs under the
build's egress policy) and ``RUN --mount=type=cache`` (buildah's cache dirs are shared
by every build on the node). Pulls are made from the host too: :meth:`Dockerfile.check_pulls`
refuses an image of a registry the operator has not listed (``FROM``, ``COPY --from=``,
``RUN --mount=from=``).

What is rewritten (the builder, buildah 1.28, has no heredocs):

* ``FROM base`` (any corral template name that is not an earlier stage's name) becomes
  ``FROM <image>``, the template imported into the builder's storage;
* ``COPY``/``ADD`` heredocs become files of the build context, named after their
  delimiter (``COPY <<EOT /etc/motd`` copies a file ``EOT`` holding the body to
  ``/etc/motd``; into a directory it is named ``EOT``, as with Docker);
* ``RUN`` heredocs become an exec-form ``/bin/sh -c`` of the same shell text (``RUN
  <<EOF`` alone runs the body as the script, as Docker does; otherwise the shell reads
  the heredoc itself, so ``RUN python3 <<EOF`` feeds the body to python3).

Parser directives (``# syntax=``, ``# escape=``) are ordinary comments here: the
escape character is always the backslash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import NoReturn

from corral.errors import InvalidInput

INSTRUCTIONS = frozenset(
    [
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "MAINTAINER",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
    ]
)
HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
MAX_SIZE = 1 << 20
CONTEXT_DIR = ".corral-heredocs"


@dataclass
class Instruction:
    line: int  # where it starts, 1-based
    keyword: str  # upper case
    text: str  # the logical line (continuations joined), keyword included
    raw: list[str]  # its physical lines as written
    heredocs: list[tuple[str, str]] = field(default_factory=list)  # (delimiter, body)


@dataclass(frozen=True)
class Dockerfile:
    instructions: tuple[Instruction, ...]

    def bases(self, known: frozenset[str]) -> list[str]:
        """Names in ``known`` that a FROM refers to (not as an earlier stage)."""
        found: list[str] = []
        for image, _stage in self._froms():
            if image in known and image not in found:
                found.append(image)
        return found

    def check_pulls(self, bases: frozenset[str], registries: Collection[str]) -> None:
        """InvalidInput (naming the line) for an image the builder would pull from a
        registry not in ``registries`` (``host[:port]``, compared case-insensitively; a
        name without one is Docker Hub's, ``docker.io``): every ``FROM``,
        ``COPY``/``ADD --from=`` and ``RUN --mount=...,from=`` that names neither an
        earlier stage, nor one of ``bases`` (corral templates), nor ``scratch``. An
        image named through a variable (``FROM $IMAGE``) is refused: name it. So is one
        the builder would find in its own store (``_in_builder_store``: image ids and
        corral's own images), which holds every org's imported templates."""
        allowed = {r.lower() for r in registries}
        stages: set[str] = set()
        earlier = 0
        froms = iter(self._froms())
        for ins in self.instructions:
            images: list[str] = []
            if ins.keyword == "FROM":
                image, stage = next(froms)
                if image and image not in bases:
                    images.append(image)
            else:
                stage = None
                for word in ins.text.split()[1:]:
                    if ins.keyword in ("COPY", "ADD") and word.startswith("--from="):
                        images.append(word[len("--from=") :])
                    elif ins.keyword == "RUN" and word.startswith("--mount="):
                        options = dict(_option(o) for o in word[len("--mount=") :].split(","))
                        if "from" in options:
                            images.append(options["from"])
            for image in images:
                if image.lower() in stages or image == "scratch":
                    continue
                if ins.keyword != "FROM" and image.isdigit() and int(image) < earlier:
                    continue  # an earlier stage by its index
                if "$" in image:
                    _fail(ins.line, f"{image}: an image named by a variable; name the image itself")
                if _in_builder_store(image):
                    _fail(
                        ins.line,
                        f"{image}: names an image of the builder's own store (an image id, or corral's "
                        "corral-template/ and corral-build/ images); name a registry's image, a corral "
                        "template or an earlier stage",
                    )
                registry = _registry(image)
                if registry not in allowed:
                    listed = ", ".join(sorted(allowed)) or "none"
                    _fail(ins.line, f"{image}: images are pulled only from {listed} (build_registries)")
            if stage:
                stages.add(stage)
            if ins.keyword == "FROM":
                earlier += 1  # stages by index, named or not

    def _froms(self) -> list[tuple[str, str | None]]:
        stages: set[str] = set()
        out: list[tuple[str, str | None]] = []
        for ins in self.instructions:
            if ins.keyword != "FROM":
                continue
            words = [w for w in ins.text.split()[1:] if not w.startswith("--")]
            image = words[0] if words else ""
            stage = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None
            out.append((image if image.lower() not in stages else "", stage))
            if stage:
                stages.add(stage)
        return out

    def render(self, images: dict[str, str]) -> tuple[str, dict[str, str]]:
        """The Dockerfile for the builder and the context files it needs (relative path
        -> content), with corral bases replaced by ``images[name]``."""
        lines: list[str] = []
        files: dict[str, str] = {}
        froms = iter(self._froms())
        for index, ins in enumerate(self.instructions):
            if ins.keyword == "FROM":
                image, _stage = next(froms)
                if image in images:
                    words = ins.text.split()
                    at = next(i for i, w in enumerate(words) if i > 0 and not w.startswith("--"))
                    words[at] = images[image]
                    lines.append(" ".join(words))
                    continue
            if not ins.heredocs:
                lines.extend(ins.raw)
            elif ins.keyword == "RUN":
                lines.append(_run_exec_form(ins))
            else:
                lines.append(_copy_from_context(ins, index, files))
        return "\n".join(lines) + "\n", files


def parse(text: str) -> Dockerfile:
    """The instructions of ``text``; InvalidInput (field ``dockerfile``) when it is not a
    Dockerfile corral can build (see the module docstring)."""
    if len(text.encode()) > MAX_SIZE:
        _fail(0, "is larger than 1 MiB")
    physical = text.replace("\r\n", "\n").split("\n")
    instructions: list[Instruction] = []
    i = 0
    while i < len(physical):
        start, line = i, physical[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        raw, parts = [line], [line.rstrip()]
        continued = parts[-1].endswith("\\")
        while continued and i < len(physical):
            parts[-1] = parts[-1].removesuffix("\\")
            nxt = physical[i]
            i += 1
            raw.append(nxt)
            if nxt.lstrip().startswith("#"):
                continue  # a comment inside a continuation is skipped, as by Docker
            parts.append(nxt.rstrip())
            continued = parts[-1].endswith("\\")
        logical = " ".join(p.strip() for p in parts if p.strip())
        keyword = logical.split(None, 1)[0].upper()
        if keyword not in INSTRUCTIONS:
            _fail(start + 1, f"unknown instruction {logical.split(None, 1)[0]!r}")
        ins = Instruction(start + 1, keyword, logical, raw)
        if keyword in ("RUN", "COPY", "ADD"):
            for match in HEREDOC.finditer(logical):
                strip, word = match.group(1) == "-", match.group(3)
                body: list[str] = []
                while True:
                    if i >= len(physical):
                        _fail(start + 1, f"heredoc {word!r} is not closed")
                    current = physical[i]
                    i += 1
                    raw.append(current)
                    if (current.lstrip("\t") if strip else current) == word:
                        break
                    body.append(current.lstrip("\t") if strip else current)
                ins.heredocs.append((word, "\n".join(body) + "\n"))
        instructions.append(ins)
    if not instructions:
        _fail(0, "has no instructions")
    first = next((ins for ins in instructions if ins.keyword != "ARG"), None)
    if first is None or first.keyword != "FROM":
        _fail(first.line if first else 0, "the first instruction must be FROM (after ARGs)")
    for ins in instructions:
        if ins.keyword in ("COPY", "ADD"):
            _check_sources(ins)
        if ins.keyword == "RUN" and any(
            w.startswith("--mount=") and _option_value(w[len("--mount=") :], "type") == "cache"
            for w in ins.text.split()[1:]
        ):
            _fail(ins.line, "RUN --mount=type=cache: the builder's caches are shared by every build here")
        if ins.keyword == "FROM" and len(ins.text.split()) < 2:
            _fail(ins.line, "FROM needs an image")
    return Dockerfile(tuple(instructions))


def _check_sources(ins: Instruction) -> None:
    words = ins.text.split()[1:]
    if any(w.startswith("--from=") for w in words):
        return
    args = [w for w in words if not w.startswith("--")]
    if args and args[0].startswith("["):
        try:
            args = [str(a) for a in json.loads(" ".join(args))]
        except ValueError:
            _fail(ins.line, f"{ins.keyword} has a malformed JSON array")
    if len(args) < 2:
        _fail(ins.line, f"{ins.keyword} needs a source and a destination")
    for source in args[:-1]:
        if HEREDOC.fullmatch(source):
            continue
        if ins.keyword == "ADD" and re.match(r"https?://", source, re.IGNORECASE):
            _fail(
                ins.line,
                f"ADD {source}: the builder would fetch it from the host; fetch it in a RUN step "
                "(curl, wget, python3), which runs under the build's egress policy",
            )
        _fail(
            ins.line,
            f"{ins.keyword} {source}: the build context is empty; copy inline content with a "
            f"heredoc ({ins.keyword} <<EOF /path ... EOF) or from a stage (--from=<stage>)",
        )


def _option(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.strip().lower(), value.strip()


def _option_value(options: str, key: str) -> str | None:
    """The value of ``key`` in ``a=1,b=2`` (lower case), or None."""
    return dict(_option(o) for o in options.split(",")).get(key)


def _registry(image: str) -> str:
    """The registry an image reference names (``host[:port]``, lower case); Docker's
    rule: the first component is one if it has a dot or a colon or is ``localhost``,
    else the image is Docker Hub's."""
    first, slash, _rest = image.partition("/")
    if slash and ("." in first or ":" in first or first.lower() == "localhost"):
        return first.lower()
    return "docker.io"


def _in_builder_store(image: str) -> bool:
    """Whether buildah would find ``image`` in its own store, which holds every org's
    imported templates, rather than pull it: an image id or any prefix of one (hex
    digits alone, ``sha256:...``), or, named without a registry, corral's own
    ``corral-template/`` and ``corral-build/`` images (a short name is looked up as
    ``localhost/<name>`` first)."""
    name = image.lower().split("@", 1)[0]
    if name.startswith("sha256:"):
        return True
    last = name.rsplit("/", 1)[-1]
    path = name[: len(name) - len(last)] + last.split(":", 1)[0]
    if re.fullmatch(r"[0-9a-f]+", path):
        return True
    first, slash, _rest = path.partition("/")
    unqualified = not slash or not ("." in first or ":" in first or first == "localhost")
    return unqualified and path.startswith(("corral-template/", "corral-build/"))


def _run_exec_form(ins: Instruction) -> str:
    rest = ins.text.split(None, 1)[1] if " " in ins.text else ""
    flags = []
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.lstrip()
    if HEREDOC.fullmatch(rest.strip()) and len(ins.heredocs) == 1:
        script = ins.heredocs[0][1]  # the heredoc is the script
    else:
        script = rest + "\n" + "".join(f"{body}{word}\n" for word, body in ins.heredocs)
    return " ".join(["RUN", *flags, json.dumps(["/bin/sh", "-c", script])])


def _copy_from_context(ins: Instruction, index: int, files: dict[str, str]) -> str:
    bodies = iter(ins.heredocs)

    def to_file(match: re.Match[str]) -> str:
        word, body = next(bodies)
        path = f"{CONTEXT_DIR}/{index}/{word}"
        files[path] = body
        return path

    return HEREDOC.sub(to_file, ins.text)


def _fail(line: int, what: str) -> NoReturn:
    where = f"line {line}: " if line else ""
    raise InvalidInput(f"dockerfile: {where}{what}", field="dockerfile")
