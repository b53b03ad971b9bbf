"""The API's OpenAPI 3.0 document, served at `/openapi.json` and checked against the server
by the schemathesis tests: what it says is what the server does."""

from __future__ import annotations

from typing import Any

from snapshot_agent import __version__

MAX_ID = 2**63 - 1
MAX_PAGE = 1_000_000
MAX_RESULTS = 100

PROBLEM = "application/problem+json"
_ID = {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID}
_NODE_ID = {"type": "integer", "format": "int64", "minimum": 0, "nullable": True}
_TIME = {"type": "string", "format": "date-time", "example": "2026-06-01T10:30:00Z"}

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "An error (RFC 9457).",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "example": "urn:snapshot-agent:problem:busy"},
            "title": {"type": "string", "example": "Conflict"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "snapshot_id": {**_ID, "description": "The snapshot in progress (409)."},
        },
    },
    "CreateSnapshot": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "redact_secrets": {
                "type": "boolean",
                "default": True,
                "description": "Mask passwords, keys and tokens in the report.",
            },
            "include_iggy": {
                "type": "boolean",
                "default": True,
                "description": "Bundle the Iggy data directory state as a separate ZIP.",
            },
        },
    },
    "Summary": {
        "type": "object",
        "nullable": True,
        "required": ["verdict", "counts"],
        "properties": {
            "verdict": {"type": "string", "example": "warn"},
            "counts": {
                "type": "object",
                "additionalProperties": {"type": "integer", "minimum": 0},
                "example": {"pass": 30, "warn": 2, "fail": 0},
            },
        },
    },
    "Snapshot": {
        "type": "object",
        "required": [
            "id",
            "deployment_id",
            "node_id",
            "name",
            "status",
            "created_at",
            "completed_at",
            "size_bytes",
            "summary",
            "error",
        ],
        "properties": {
            "id": _ID,
            "deployment_id": _NODE_ID,
            "node_id": _NODE_ID,
            "name": {"type": "string", "example": "snapshot-20260601-103000"},
            "status": {"type": "string", "enum": ["processing", "completed", "failed"]},
            "created_at": _TIME,
            "completed_at": {**_TIME, "nullable": True},
            "size_bytes": {"type": "integer", "minimum": 0, "nullable": True},
            "summary": {"$ref": "#/components/schemas/Summary"},
            "error": {"type": "string", "nullable": True, "description": "Why it failed."},
        },
    },
    "SnapshotPage": {
        "type": "object",
        "required": ["items", "page", "total_results", "total_pages"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Snapshot"}},
            "page": {"type": "integer", "minimum": 1},
            "total_results": {"type": "integer", "minimum": 0},
            "total_pages": {"type": "integer", "minimum": 0},
        },
    },
    "DownloadUrl": {
        "type": "object",
        "required": ["url"],
        "properties": {"url": {"type": "string", "format": "uri"}},
    },
    "Check": {
        "type": "object",
        "required": ["id", "category", "title"],
        "properties": {
            "id": {"type": "string", "example": "sysctl.network"},
            "category": {"type": "string"},
            "title": {"type": "string"},
        },
    },
}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


#: Every authenticated operation may answer these (on TCP; the socket needs no token).
AUTH_PROBLEMS = {
    "401": _problem("No bearer token, or not one of api.tokens (TCP only)."),
    "403": _problem("The token's scope does not allow this (TCP only)."),
}
#: Any operation may answer this: the listener's or the peer's connection limit, or a
#: records store another process holds.
BUSY_PROBLEM = {
    "503": _problem(
        "Too many connections (at most 128 per listener, 64 per peer), or the records "
        "store is busy; retry after Retry-After."
    )
}
ID_PARAMETER = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The snapshot's id.",
    "schema": _ID,
}


def _operation(
    summary: str, scope: str | None, responses: dict[str, Any], **more: Any
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, **more}
    if scope is None:
        operation["security"] = []
    else:
        operation["description"] = (
            more.get("description", "") + f" Needs scope `{scope}` on TCP."
        ).strip()
        responses = {**responses, **AUTH_PROBLEMS}
    operation["responses"] = {**BUSY_PROBLEM, **responses}  # an operation's own 503 first
    return operation


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "snapshot-agent",
            "version": __version__,
            "description": (
                "Diagnostic snapshots of one Apache Iggy node, at node scope: the supervisor's "
                "Snapshots API without the deployment around it. On the Unix socket the "
                "socket's file permissions are the authentication; on TCP (mutual TLS) every "
                "request but /healthz and /openapi.json carries `Authorization: Bearer "
                "<token>` with scope `read` (list, get, download, checks, metrics) or "
                "`manage` (also create and delete). Errors are application/problem+json, "
                "except a request the HTTP layer cannot read at all (not HTTP, a header "
                "line or URL over 8 KiB): a 400 in text/plain, and that connection closed."
            ),
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/snapshots": {
                "get": _operation(
                    "List snapshots, newest first",
                    "read",
                    {
                        "200": _json("One page of snapshots.", _ref("SnapshotPage")),
                        "400": _problem("page or results out of range, or not a whole number."),
                    },
                    operationId="listSnapshots",
                    parameters=[
                        {
                            "name": "page",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_PAGE,
                                "default": 1,
                            },
                        },
                        {
                            "name": "results",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_RESULTS,
                                "default": 10,
                            },
                        },
                    ],
                ),
                "post": _operation(
                    "Take a snapshot",
                    "manage",
                    {
                        "202": _json("Started: the record, status processing.", _ref("Snapshot")),
                        "400": _problem("The body is not JSON, or names a field twice."),
                        "409": _problem("A snapshot is in progress on this node."),
                        "408": _problem("The body took over 10 s to arrive."),
                        "413": _problem("The body is too large."),
                        "415": _problem("The body is not sent as application/json."),
                        "422": _problem("Unknown fields, or values of the wrong type."),
                        "503": _problem("The agent is stopping, or cannot start a snapshot."),
                    },
                    operationId="createSnapshot",
                    description="One snapshot at a time per node: refused, not queued.",
                    requestBody={
                        "required": False,
                        "content": {"application/json": {"schema": _ref("CreateSnapshot")}},
                    },
                ),
            },
            "/v1/snapshots/{id}": {
                "parameters": [ID_PARAMETER],
                "get": _operation(
                    "One snapshot",
                    "read",
                    {
                        "200": _json("The snapshot.", _ref("Snapshot")),
                        "400": _problem("The id is not a positive whole number."),
                        "404": _problem("No such snapshot."),
                    },
                    operationId="getSnapshot",
                ),
                "delete": _operation(
                    "Delete a snapshot and its stored archive",
                    "manage",
                    {
                        "204": {"description": "Deleted."},
                        "400": _problem("The id is not a positive whole number."),
                        "404": _problem("No such snapshot."),
                        "409": _problem("The snapshot is in progress."),
                        "502": _problem("Object storage refused to remove the archive."),
                    },
                    operationId="deleteSnapshot",
                ),
            },
            "/v1/snapshots/{id}/download": {
                "parameters": [ID_PARAMETER],
                "get": _operation(
                    "Download a snapshot's archive",
                    "read",
                    {
                        "200": {
                            "description": (
                                "A short-lived presigned URL (S3 storage), or the archive "
                                "itself (local storage)."
                            ),
                            "content": {
                                "application/json": {"schema": _ref("DownloadUrl")},
                                "application/zip": {
                                    "schema": {"type": "string", "format": "binary"}
                                },
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}
                                },
                            },
                        },
                        "400": _problem("The id is not a positive whole number."),
                        "404": _problem("No such snapshot, it failed, or its archive is gone."),
                        "409": _problem("The snapshot is in progress."),
                        "502": _problem("Object storage could not be reached."),
                    },
                    operationId="downloadSnapshot",
                ),
            },
            "/v1/checks": {
                "get": _operation(
                    "The checks a snapshot runs",
                    "read",
                    {
                        "200": _json(
                            "As `snapshot-agent checks --json`.",
                            {
                                "type": "array",
                                "items": _ref("Check"),
                            },
                        ),
                        "503": _problem("The list could not be made."),
                    },
                    operationId="listChecks",
                ),
            },
            "/healthz": {
                "get": _operation(
                    "Whether the service is up",
                    None,
                    {
                        "200": _json(
                            "Up.",
                            {
                                "type": "object",
                                "required": ["status"],
                                "properties": {
                                    "status": {"type": "string", "enum": ["ok"]},
                                    "snapshot_id": {**_ID, "nullable": True},
                                },
                            },
                        ),
                        "503": _problem("The records store cannot be read."),
                    },
                    operationId="health",
                ),
            },
            "/metrics": {
                "get": _operation(
                    "Prometheus metrics",
                    "read",
                    {
                        "200": {
                            "description": "The Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                    operationId="metrics",
                ),
            },
            "/openapi.json": {
                "get": _operation(
                    "This document",
                    None,
                    {"200": _json("OpenAPI 3.0.", {"type": "object"})},
                    operationId="openapi",
                ),
            },
        },
    }
