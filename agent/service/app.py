"""The HTTP API: routes, the checks on what comes in, and the answers (aiohttp).

Node scope of the supervisor's Snapshots API: `/v1/snapshots` (list, create),
`/v1/snapshots/{id}` (get, delete), `/v1/snapshots/{id}/download`, plus `/v1/checks`,
`/healthz`, `/metrics` and `/openapi.json`. Every input is checked before it reaches the
store: ids are positive int64s, pages and sizes are bounded, a body is at most a few KiB
of JSON with known fields of the right types; anything else is a 4xx problem document.
Store and storage calls run in worker threads, so a slow disk or object store never
holds up the event loop, and so never another client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from snapshot_agent.pipeline.record import SnapshotOptions, SnapshotStatus
from snapshot_agent.service.archives import ArchiveError, Archives
from snapshot_agent.service.auth import GRANTS, Caller, Scope, Tokens
from snapshot_agent.service.catalog import Catalog, CatalogError
from snapshot_agent.service.exclusive import Busy
from snapshot_agent.service.metrics import Metrics
from snapshot_agent.service.openapi import MAX_ID, MAX_PAGE, MAX_RESULTS, document
from snapshot_agent.service.problems import Problem, problems
from snapshot_agent.service.records import Record, RecordStore, StoreError
from snapshot_agent.service.snapshots import SnapshotRunner, Unavailable

#: A create's body is `{"redact_secrets": true, "include_iggy": true}`: 64 KiB is plenty.
MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_S = 10.0  # to send that body, once the headers are in
ID = re.compile(r"[1-9][0-9]{0,18}")
WHOLE = re.compile(r"[0-9]{1,19}")
SOCKET_CALLER = Caller("the Unix socket", GRANTS[Scope.MANAGE])
ANONYMOUS = Caller("anonymous", frozenset())
CALLER = "snapshot_agent.caller"  # the request's key for its Caller

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CreateSnapshot(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `POST /v1/snapshots`; both fields optional (the reference's defaults)."""

    redact_secrets: bool = True
    include_iggy: bool = True


@dataclass(frozen=True)
class Service:
    """What the handlers work with."""

    store: RecordStore
    runner: SnapshotRunner
    archives: Archives
    metrics: Metrics
    catalog: Catalog
    tokens: Tokens


SERVICE = web.AppKey("service", Service)


def build_app(service: Service) -> web.Application:
    """The aiohttp application over `service`."""
    app = web.Application(
        client_max_size=MAX_BODY_BYTES, middlewares=[problems, _agent_errors, _authenticate]
    )
    app[SERVICE] = service
    app.router.add_get("/v1/snapshots", list_snapshots)
    app.router.add_post("/v1/snapshots", create_snapshot)
    app.router.add_get("/v1/snapshots/{id}", get_snapshot)
    app.router.add_delete("/v1/snapshots/{id}", delete_snapshot)
    app.router.add_get("/v1/snapshots/{id}/download", download_snapshot)
    app.router.add_get("/v1/checks", list_checks)
    app.router.add_get("/healthz", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    return app


# -- handlers ------------------------------------------------------------------------


async def list_snapshots(request: web.Request) -> web.Response:
    """`GET /v1/snapshots?page=1&results=10`: one page, newest first."""
    page = _query_int(request, "page", 1, MAX_PAGE, 1)
    results = _query_int(request, "results", 1, MAX_RESULTS, 10)
    found = await asyncio.to_thread(_service(request).store.page, page, results)
    return _json(found.to_json())


async def create_snapshot(request: web.Request) -> web.Response:
    """`POST /v1/snapshots`: start one; 202 with its record, 409 while one is in progress."""
    body = await _create_body(request)
    options = SnapshotOptions(redact=body.redact_secrets, include_iggy=body.include_iggy)
    record = await _service(request).runner.create(options)
    log.info("snapshot %s (%s) requested by %s", record.id, record.name, _who(request))
    return _json(record.to_json(), 202, headers={"Location": f"/v1/snapshots/{record.id}"})


async def get_snapshot(request: web.Request) -> web.Response:
    """`GET /v1/snapshots/{id}`."""
    return _json((await _record(request)).to_json())


async def delete_snapshot(request: web.Request) -> web.Response:
    """`DELETE /v1/snapshots/{id}`: the stored archive first, then the record; 204."""
    service = _service(request)
    record = await _record(request)
    if record.status == SnapshotStatus.PROCESSING:
        raise _in_progress(record, "delete it once it has ended")
    await service.archives.run(service.archives.remove, record)
    if await asyncio.to_thread(service.store.delete, record.id) is None:
        raise _not_found(record.id)  # deleted meanwhile (retention, another client)
    log.info("snapshot %s (%s) deleted by %s", record.id, record.name, _who(request))
    return web.Response(status=204)


async def download_snapshot(request: web.Request) -> web.StreamResponse:
    """`GET /v1/snapshots/{id}/download`: `{url}` for S3, the archive itself when local."""
    service = _service(request)
    record = await _record(request)
    if record.status == SnapshotStatus.PROCESSING:
        raise _in_progress(record, "download it once it has completed")
    location = record.location
    if record.status == SnapshotStatus.FAILED or location is None:
        raise Problem(
            404,
            f"snapshot {record.id} failed ({record.error or 'no reason given'}); it has no archive",
            "failed",
        )
    if location.sink == "s3":
        url = await service.archives.run(service.archives.download_url, record)
        return _json({"url": url})
    if location.sink != "local":
        raise Problem(404, f"snapshot {record.id} was stored at {location.uri}, not here", "gone")
    path = await asyncio.to_thread(service.archives.local_path, record)
    if path is None:
        raise Problem(
            404,
            f"the archive of snapshot {record.id} ({location.uri}) is gone from local storage; "
            "delete the record",
            "gone",
        )
    kind = "application/octet-stream" if path.name.endswith(".enc") else "application/zip"
    return web.FileResponse(
        path,
        headers={
            "Content-Type": kind,
            "Content-Disposition": f'attachment; filename="{path.name}"',
        },
    )


async def list_checks(request: web.Request) -> web.Response:
    """`GET /v1/checks`: the catalog, as `snapshot-agent checks --json`."""
    body = await _service(request).catalog.document()
    return web.Response(body=body, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    """`GET /healthz`: up when the store answers; which snapshot runs, if one does."""
    service = _service(request)
    await asyncio.to_thread(service.store.counts)
    running = service.runner.running
    return _json({"status": "ok", "snapshot_id": running.id if running else None})


async def metrics(request: web.Request) -> web.Response:
    """`GET /metrics`: Prometheus text."""
    body, content_type = await asyncio.to_thread(_service(request).metrics.render)
    return web.Response(body=body, headers={"Content-Type": content_type})


_OPENAPI = json.dumps(document()).encode()


async def openapi(_request: web.Request) -> web.Response:
    """`GET /openapi.json`."""
    return web.Response(body=_OPENAPI, content_type="application/json")


#: The scope each handler needs on TCP; absent: none (health, the document, errors).
SCOPES: dict[Any, Scope] = {
    list_snapshots: Scope.READ,
    get_snapshot: Scope.READ,
    download_snapshot: Scope.READ,
    list_checks: Scope.READ,
    metrics: Scope.READ,
    create_snapshot: Scope.MANAGE,
    delete_snapshot: Scope.MANAGE,
}


# -- middlewares -----------------------------------------------------------------------


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The caller: anyone who could open the socket, else a bearer token with the scope."""
    scope = SCOPES.get(getattr(request.match_info.route, "handler", None))
    if _on_unix_socket(request):
        caller = SOCKET_CALLER
    elif scope is None:
        caller = ANONYMOUS
    else:
        caller = _service(request).tokens.caller(request.headers.get("Authorization"))
        caller.require(scope)
    request[CALLER] = caller
    response = await handler(request)
    response.headers.setdefault("Cache-Control", "no-store")  # presigned URLs, records
    return response


@web.middleware
async def _agent_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The service's own errors as problems: busy 409, storage 502, unavailable 503."""
    try:
        return await handler(request)
    except Busy as exc:
        extra = {"snapshot_id": exc.record.id} if exc.record is not None else {}
        raise Problem(409, str(exc), "busy", headers={"Retry-After": "5"}, **extra) from None
    except ArchiveError as exc:
        raise Problem(502, str(exc), "storage") from None
    except (StoreError, Unavailable, CatalogError) as exc:
        raise Problem(503, str(exc), "unavailable", headers={"Retry-After": "10"}) from None


# -- inputs --------------------------------------------------------------------------


def _service(request: web.Request) -> Service:
    return request.app[SERVICE]


async def _record(request: web.Request) -> Record:
    """The record the path's id names; 400 for an id that is not one, 404 when absent."""
    raw = request.match_info["id"]
    if not ID.fullmatch(raw) or int(raw) > MAX_ID:
        raise Problem(
            400,
            f"snapshot id {raw[:40]!r}: must be a whole number from 1 to {MAX_ID}",
            "bad-id",
        )
    record = await asyncio.to_thread(_service(request).store.get, int(raw))
    if record is None:
        raise _not_found(int(raw))
    return record


def _query_int(request: web.Request, name: str, low: int, high: int, default: int) -> int:
    """A whole-number query parameter within [low, high], given at most once."""
    values = request.query.getall(name, [])
    if not values:
        return default
    if len(values) > 1:
        raise Problem(400, f"{name}: given {len(values)} times; give it once", "bad-query")
    value = values[0]
    if not WHOLE.fullmatch(value) or not low <= int(value) <= high:
        raise Problem(
            400,
            f"{name} {value[:40]!r}: must be a whole number from {low} to {high}",
            "bad-query",
        )
    return int(value)


async def _create_body(request: web.Request) -> CreateSnapshot:
    """The create's JSON body (none: the defaults); 400, 408, 413, 415 or 422 when wrong."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise Problem(
            413, f"a body of {request.content_length} bytes; at most {MAX_BODY_BYTES}", "too-large"
        )
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            data = await request.read()
    except TimeoutError:
        raise Problem(408, f"the body took over {BODY_TIMEOUT_S:g} s to arrive", "slow") from None
    if not data.strip():
        return CreateSnapshot()
    if not _is_json(request.content_type):
        sent = (
            f"a body sent as {request.content_type}"
            if "Content-Type" in request.headers
            else "a body without a Content-Type"
        )
        raise Problem(
            415,
            f"{sent}; send it as application/json (curl: -H 'Content-Type: application/json')",
            "unsupported-media-type",
        )
    try:
        body = msgspec.json.decode(data, type=CreateSnapshot)
    except msgspec.ValidationError as exc:
        raise Problem(
            422,
            f'{exc}; send {{"redact_secrets": true|false, "include_iggy": true|false}}',
            "invalid-body",
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # a key of invalid UTF-8: the latter
        raise Problem(400, f"the body is not JSON ({exc})", "malformed-body") from None
    # Every value is a bool by now, so this second parse is flat and small. A repeated key
    # is refused: a proxy that reads the first and this service the last would disagree.
    repeated = _repeated_key(data)
    if repeated is not None:
        raise Problem(400, f"the body names {repeated!r} twice; name it once", "malformed-body")
    return body


def _is_json(media_type: str) -> bool:
    """application/json, or a JSON-based type such as application/merge-patch+json."""
    kind = media_type.lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _repeated_key(data: bytes) -> str | None:
    """The first key a JSON object in `data` names twice, or None."""
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        repeated.extend(k for i, k in enumerate(keys) if k in keys[:i])
        return dict(items)

    json.loads(data, object_pairs_hook=pairs)
    return repeated[0] if repeated else None


# -- outputs ---------------------------------------------------------------------------


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(doc).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _not_found(record_id: int) -> Problem:
    return Problem(404, f"no snapshot {record_id} on this node", "not-found")


def _in_progress(record: Record, what: str) -> Problem:
    return Problem(
        409,
        f"snapshot {record.id} ({record.name}) is in progress; {what}",
        "in-progress",
        headers={"Retry-After": "5"},
        snapshot_id=record.id,
    )


def _on_unix_socket(request: web.Request) -> bool:
    """Whether the request came over the Unix socket (else TCP)."""
    transport = request.transport
    return transport is not None and isinstance(transport.get_extra_info("sockname"), str | bytes)


def _who(request: web.Request) -> str:
    """The caller for the log: the token's name, or the socket peer's uid and pid."""
    caller: Caller = request.get(CALLER, ANONYMOUS)
    if caller is not SOCKET_CALLER or request.transport is None:
        return caller.name
    sock = request.transport.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
    except (OSError, AttributeError, struct.error):
        return caller.name
    return f"uid {uid} (pid {pid}) on the Unix socket"
