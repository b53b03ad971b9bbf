"""TCP on 127.0.0.1: mutual TLS only (no client certificate, or one from another CA: no
handshake), then bearer tokens with scopes (read, manage)."""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path
from typing import Any

import pytest

from .conftest import MANAGE_TOKEN, READ_TOKEN, Certs, Reply, Server, exchange


def tls_server(serve: Any, certs: Certs) -> Server:
    server: Server = serve(api=certs.api())
    server.start()
    return server


def call(
    server: Server,
    certs: Certs,
    method: str,
    path: str,
    token: str | None = None,
    cert: Path | None = None,
    body: dict[str, Any] | None = None,
) -> Reply:
    """A request over TCP with mutual TLS (`cert`: the client's; default the good one)."""
    assert server.port is not None
    conn = http.client.HTTPSConnection(
        "127.0.0.1",
        server.port,
        context=certs.client_context(cert or certs.client_pem),
        timeout=30,
    )
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return exchange(conn, method, path, body, headers)


@pytest.fixture
def server(serve: Any, certs: Certs) -> Server:
    return tls_server(serve, certs)


def test_no_client_certificate_no_handshake(server: Server, certs: Certs) -> None:
    assert server.port is not None
    conn = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=certs.client_context(None), timeout=30
    )
    # TLS 1.3 reports the refusal on the first read rather than in the handshake.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        exchange(conn, "GET", "/healthz")
    assert server.get("/healthz").status == 200  # and it keeps serving


def test_a_certificate_from_another_ca_is_refused(server: Server, certs: Certs) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        call(server, certs, "GET", "/v1/snapshots", MANAGE_TOKEN, cert=certs.stranger_pem)


def test_tokens_and_scopes(server: Server, certs: Certs) -> None:
    assert call(server, certs, "GET", "/healthz").status == 200  # no token needed
    assert call(server, certs, "GET", "/openapi.json").status == 200

    missing = call(server, certs, "GET", "/v1/snapshots")
    assert missing.problem["status"] == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="snapshot-agent"'
    wrong = call(server, certs, "GET", "/v1/snapshots", "not-a-token")
    assert wrong.problem["status"] == 401 and "invalid_token" in wrong.headers["www-authenticate"]

    assert call(server, certs, "GET", "/v1/snapshots", READ_TOKEN).status == 200
    assert call(server, certs, "GET", "/metrics", READ_TOKEN).status == 200
    refused = call(server, certs, "POST", "/v1/snapshots", READ_TOKEN, body={})
    assert refused.problem["status"] == 403
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert call(server, certs, "DELETE", "/v1/snapshots/1", READ_TOKEN).status == 403

    created = call(server, certs, "POST", "/v1/snapshots", MANAGE_TOKEN, body={})
    assert created.status == 202, created
    record = created.json()
    assert call(server, certs, "GET", f"/v1/snapshots/{record['id']}", READ_TOKEN).status == 200
    server.wait_until_ended(record["id"])
    assert (
        call(server, certs, "DELETE", f"/v1/snapshots/{record['id']}", MANAGE_TOKEN).status == 204
    )
    assert server.stop() == 0
    log = server.logs()
    assert f"snapshot {record['id']} ({record['name']}) requested by token supervisor" in log
    assert READ_TOKEN not in log and MANAGE_TOKEN not in log
