"""Resource ids: a prefix and 16 lowercase base-36 characters, e.g. ``sb-0f3k...``.

Ids are validated before they touch a path or a query.
"""

from __future__ import annotations

import re
import secrets
import string

from corral.errors import InvalidInput

_ALPHABET = string.ascii_lowercase + string.digits
_ID = re.compile(r"^(sb|es|ps|as|ex|org|cp|pa|tpl|se)-[a-z0-9]{8,32}$")


def new_id(prefix: str) -> str:
    return f"{prefix}-" + "".join(secrets.choice(_ALPHABET) for _ in range(16))


def is_valid(value: str, prefix: str) -> bool:
    return bool(_ID.fullmatch(value)) and value.startswith(prefix + "-")


def check(value: str, prefix: str, field: str) -> str:
    """Return ``value`` if it is a well-formed id with ``prefix``; else InvalidInput."""
    if not is_valid(value, prefix):
        raise InvalidInput(f"{field} must look like {prefix}-xxxxxxxxxxxxxxxx", field=field)
    return value
