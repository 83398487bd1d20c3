"""Optional API-key auth: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.

Enabled by ``CXR_AUTH_ENABLED``; keys come from ``CXR_API_KEYS``. Every configured key is
compared with :func:`hmac.compare_digest` (no early exit). Health, readiness and metrics
routes do not depend on this.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from .errors import UNAUTHORIZED, ApiError

_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")
_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")
WWW_AUTHENTICATE = 'Bearer realm="cxr", charset="UTF-8"'


def key_matches(given: str, keys: Sequence[SecretStr]) -> bool:
    """True when ``given`` equals one of ``keys``; compares against all of them."""
    probe = given.encode("utf-8")
    found = False
    for key in keys:
        found |= hmac.compare_digest(probe, key.get_secret_value().encode("utf-8"))
    return found


def require_api_key(
    request: Request,
    api_key: Annotated[str | None, Security(_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    """Dependency: pass when auth is off or a valid key is presented, else 401 problem."""
    settings = request.app.state.cxr.settings
    if not settings.auth_enabled:
        return
    given = api_key or (bearer.credentials if bearer is not None else None)
    if not given:
        detail = "send an API key in X-API-Key or as Authorization: Bearer <key>"
    elif not key_matches(given, settings.api_keys):
        detail = "the API key is not valid"
    else:
        return
    raise ApiError(UNAUTHORIZED, detail, headers={"WWW-Authenticate": WWW_AUTHENTICATE})
