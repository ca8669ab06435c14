"""API keys for the write API.

Keys are configured in the settings (``ATLAS_API_KEYS``) as comma-separated ``name:role:sha256hex``
entries; only the SHA-256 of a key is ever stored. A client sends the key itself as
``Authorization: Bearer <key>``. Keys are long random strings (``attention-atlas keys new``), so a
plain SHA-256 is enough to keep them safe at rest; the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from .errors import ApiError, quote

Role = Literal["write", "read"]
ROLES: tuple[str, ...] = ("write", "read")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
HEX_RE = re.compile(r"^[0-9a-f]{64}$")
KEY_PREFIX = "atlas_"
REALM = "attention-atlas"


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: str
    digest: str  # sha256 hex of the key

    def settings_entry(self) -> str:
        return f"{self.name}:{self.role}:{self.digest}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def make_entry(name: str, role: str, key: str) -> ApiKey:
    if not NAME_RE.match(name):
        raise ValueError(f"key name {name!r}: use letters, digits, '_', '.', '-' (at most 64 characters)")
    if role not in ROLES:
        raise ValueError(f"role {role!r}: use one of {', '.join(ROLES)}")
    return ApiKey(name=name, role=role, digest=hash_key(key))


@lru_cache(maxsize=8)
def parse_api_keys(value: str) -> tuple[ApiKey, ...]:
    """Parse the ``api_keys`` setting; raise ValueError naming every malformed entry."""
    keys: list[ApiKey] = []
    problems: list[str] = []
    names: set[str] = set()
    for i, raw in enumerate(p.strip() for p in value.split(",")):
        if not raw:
            continue
        parts = raw.split(":")
        where = f"entry {i + 1}"
        if len(parts) != 3:
            problems.append(f"{where}: expected 'name:role:sha256hex'")
            continue
        name, role, digest = (p.strip() for p in parts)
        where = f"entry {i + 1} ({name!r})"
        if not NAME_RE.match(name):
            problems.append(f"{where}: the name may hold letters, digits, '_', '.', '-'")
        if role not in ROLES:
            problems.append(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
        if not HEX_RE.match(digest.lower()):
            problems.append(f"{where}: the hash must be 64 hex digits (the SHA-256 of the key, "
                            "as `attention-atlas keys hash` prints it), never the key itself")
        if name in names:
            problems.append(f"{where}: the name is used twice")
        names.add(name)
        keys.append(ApiKey(name=name, role=role, digest=digest.lower()))
    if problems:
        raise ValueError("api_keys: " + "; ".join(problems))
    return tuple(keys)


def find_key(presented: str, keys: tuple[ApiKey, ...]) -> ApiKey | None:
    """The configured key whose hash matches ``presented`` (every entry is compared, in constant time)."""
    digest = hash_key(presented)
    found = None
    for k in keys:
        if hmac.compare_digest(digest, k.digest):
            found = k
    return found


# declares the scheme in OpenAPI; the checks below produce the errors (in the service's error shape)
bearer_scheme = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer <key>`")


def _challenge(error: str | None = None) -> dict[str, str]:
    value = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
    return {"WWW-Authenticate": value}


def authenticate(request: Request) -> ApiKey:
    """The key the request carries; 401 when it has none or an unknown one."""
    header = request.headers.get("authorization")
    keys = parse_api_keys(request.app.state.settings.api_keys)
    if not header:
        raise ApiError(401, "this operation needs an API key: send 'Authorization: Bearer <key>'",
                       headers=_challenge(), details={"scheme": "Bearer"})
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        raise ApiError(401, f"unsupported authorization scheme {quote(scheme, 20)}: send 'Authorization: Bearer <key>'",
                       headers=_challenge("invalid_request"), details={"scheme": "Bearer"})
    if not token:
        raise ApiError(401, "the Bearer token is empty: send 'Authorization: Bearer <key>' with your API key",
                       headers=_challenge("invalid_request"), details={"scheme": "Bearer"})
    key = find_key(token, keys)
    if key is None:
        msg = "the API key is not valid" if keys else "no API keys are configured on this server"
        raise ApiError(401, msg, headers=_challenge("invalid_token"), details={"scheme": "Bearer"})
    request.state.api_key_name = key.name
    return key


def require_write(request: Request, _declared: Annotated[object, Depends(bearer_scheme)] = None) -> ApiKey:
    """Dependency of every write operation: a valid key with the write role (401, else 403)."""
    key = authenticate(request)
    if key.role != "write":
        raise ApiError(403, f"the key '{key.name}' is read-only; this operation needs a key with the write role",
                       headers=_challenge("insufficient_scope"), details={"role": key.role, "needed": "write"})
    return key


WriteKey = Annotated[ApiKey, Depends(require_write)]
