"""Who may do what: bearer tokens with scopes on TCP, the socket's file permissions on Unix.

The config holds each token's SHA-256 (`api.tokens: [{name, scope, sha256}]`), never the
token: a leaked config grants nothing. A presented token is hashed and compared with
every configured hash in constant time, all of them, whichever matches, so the time an
answer takes says nothing about how close a guess was or which token it hit. `read` lists,
gets and downloads snapshots and reads the checks and metrics; `manage` does all of that
and creates and deletes snapshots.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from snapshot_agent.config import ApiToken
from snapshot_agent.service.problems import Problem

REALM = "snapshot-agent"
MAX_TOKEN_CHARS = 4096  # a token is 32 to 64 characters; nothing longer is hashed


class Scope(StrEnum):
    """What a token allows."""

    READ = "read"
    MANAGE = "manage"


#: What each token scope grants.
GRANTS = {Scope.READ: frozenset({Scope.READ}), Scope.MANAGE: frozenset(Scope)}


@dataclass(frozen=True)
class Caller:
    """Who is asking (for logs: a token's name, or the socket's peer) and what they may do."""

    name: str
    scopes: frozenset[Scope]

    def require(self, scope: Scope) -> None:
        """Raise a 403 problem unless the caller has `scope`."""
        if scope not in self.scopes:
            raise Problem(
                403,
                f"{self.name} may not do this; it needs a token with scope {scope}",
                "insufficient-scope",
                headers={
                    "WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", '
                    f'scope="{scope}"'
                },
            )


def token_sha256(token: str) -> str:
    """The hex SHA-256 of a token, as `api.tokens[].sha256` holds it."""
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The configured tokens, checked against an Authorization header."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._tokens = [(bytes.fromhex(t.sha256), t.name, Scope(t.scope)) for t in tokens]

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def caller(self, authorization: str | None) -> Caller:
        """The caller a header `Bearer <token>` names; a 401 problem when none matches."""
        if not authorization:
            raise _unauthorized("no bearer token; send Authorization: Bearer <token>", None)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized(
                "the Authorization header is not `Bearer <token>`", "invalid_request"
            )
        digest = hashlib.sha256(token[:MAX_TOKEN_CHARS].encode(errors="replace")).digest()
        found: tuple[str, Scope] | None = None
        for expected, name, scope in self._tokens:  # every one, whichever matches
            if hmac.compare_digest(digest, expected) and len(token) <= MAX_TOKEN_CHARS:
                found = (name, scope)
        if found is None:
            raise _unauthorized("the bearer token is not one of api.tokens", "invalid_token")
        return Caller(f"token {found[0]}", GRANTS[found[1]])


def _unauthorized(detail: str, error: str | None) -> Problem:
    challenge = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
    return Problem(401, detail, "unauthorized", headers={"WWW-Authenticate": challenge})
