"""API keys: bearer tokens checked against their sha256 hashes, with scopes and allow-lists.

Keys are hashed on arrival and compared by hash only; the clear key is never stored,
logged, labelled or echoed. Logs and metrics see the key's ``id``.

``authorize`` is the one check: the ASGI middleware runs it before any body byte is
read and remembers the key it admitted on the request's scope; the route dependencies
take that key (``admitted_key``) or, in an app served without the middleware, run the
check themselves. They also declare the scheme in the OpenAPI spec.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import MutableMapping
from typing import Any

from adapters.errors import AuthenticationError, PermissionDeniedError
from gateway.context import RequestContext
from gateway.settings import ApiKey, Scope, Settings, hash_key

log = logging.getLogger("lora_gateway.auth")

ANONYMOUS = ApiKey(id="anonymous", key_hash="sha256:" + "0" * 64, scopes=["inference", "admin"])


class KeyRing:
    """Owns the configured keys, indexed by hash."""

    def __init__(self, settings: Settings) -> None:
        self.disabled = settings.auth_disabled and not settings.demo
        self._by_hash = {k.key_hash: k for k in settings.api_keys}
        if self.disabled:
            log.warning(
                "AUTHENTICATION IS DISABLED (LORA_GATEWAY_AUTH_DISABLED=true): every caller "
                "is an admin. Never run this way outside a private test setup."
            )

    def authenticate(self, authorization: str | None) -> ApiKey:
        if self.disabled:
            return ANONYMOUS
        if not authorization:
            raise AuthenticationError(
                "Missing API key. Send it as 'Authorization: Bearer <key>'.",
                code="missing_api_key",
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError(
                "Malformed Authorization header. Send 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
            )
        digest = hash_key(token)
        key = self._by_hash.get(digest)
        # compare_digest keeps the check constant-time for the matched entry.
        if key is None or not hmac.compare_digest(key.key_hash, digest):
            raise AuthenticationError("Invalid API key.", code="invalid_api_key")
        return key

    @staticmethod
    def require(key: ApiKey, scope: Scope) -> None:
        if scope not in key.scopes:
            raise PermissionDeniedError(
                f"This API key lacks the '{scope}' scope needed for this endpoint.",
                code="insufficient_scope",
            )


def authorize(
    keyring: KeyRing, authorization: str | None, scope: Scope, ctx: RequestContext
) -> ApiKey:
    """The key behind ``authorization``, if it holds ``scope``; else 401 or 403.

    The key's id goes into the request context before the scope check, so that the
    access log names the key that was refused.
    """
    key = keyring.authenticate(authorization)
    ctx.key_id = key.id
    keyring.require(key, scope)
    return key


_ADMITTED = "admitted"  # the scope state key: (key, the scope it was checked for)


def remember_admitted(state: dict[str, Any], key: ApiKey, scope: Scope) -> None:
    """Keep the key the middleware checked for ``scope`` on the request's scope state."""
    state[_ADMITTED] = (key, scope)


def admitted_key(asgi_scope: MutableMapping[str, Any], scope: Scope) -> ApiKey | None:
    """The key the middleware already checked for ``scope`` on this request, if any."""
    found = asgi_scope.get("state", {}).get(_ADMITTED)
    if found is not None and found[1] == scope:
        key: ApiKey = found[0]
        return key
    return None
