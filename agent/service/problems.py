"""Errors as problem documents (RFC 9457): `application/problem+json` {type, title, status, detail}.

Every error the API answers with has this shape, whether a handler raised it, aiohttp
refused the request (404, 405, 413) or a bug slipped through (500, logged). `type` names
the kind of problem (`urn:snapshot-agent:problem:<kind>`), or is `about:blank` when the
HTTP status says it all.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web

CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:snapshot-agent:problem:"
#: Headers of aiohttp's own errors worth keeping (405's Allow, 401's challenge).
KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(Exception):
    """An error answered as a problem document; `extra` members are added to it."""

    def __init__(
        self,
        status: int,
        detail: str,
        kind: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> web.Response:
        """This problem as an HTTP response."""
        return problem_response(
            self.status, self.detail, self.kind, headers=self.headers, **self.extra
        )


def problem_response(
    status: int,
    detail: str,
    kind: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """A problem document with `status` and `detail` (one line for a person)."""
    document = {
        "type": f"{TYPE_PREFIX}{kind}" if kind else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return web.Response(
        status=status,
        body=json.dumps(document).encode(),
        content_type=CONTENT_TYPE,
        headers=headers,
    )


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into a problem document; a bug becomes a logged 500, never a crash."""
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # a redirect is not a problem
        return problem_response(
            exc.status,
            _detail(request, exc),
            headers={k: exc.headers[k] for k in KEPT_HEADERS if k in exc.headers},
        )
    except (asyncio.CancelledError, ConnectionError):
        raise  # the client went away: nothing to answer
    except Exception:
        log.exception("internal error answering %s %s", request.method, request.path)
        return problem_response(
            500, "internal error (logged by the agent); please report it", "internal"
        )


def _detail(request: web.Request, exc: web.HTTPException) -> str:
    """A line that says what was wrong with the request and what to do."""
    if exc.status == 404:
        return f"no such resource: {request.path!r}; the API is described at /openapi.json"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"{request.method} is not allowed on {request.path!r}; use {allowed}"
    if exc.status == 413:
        return "request body too large; a request to this API is a few bytes of JSON"
    text = (exc.text or "").strip()
    return text.splitlines()[0] if text else HTTPStatus(exc.status).phrase
