"""Locating and reading the Iggy server's TOML config (read-only; secrets stay in it)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapshot_agent.context import Context

MAX_CONFIG_BYTES = 2 * 1024 * 1024

#: Where packaged, containerised and source installs keep server.toml (iggy-facts.md).
CANDIDATES = (
    "/etc/iggy/server.toml",
    "/etc/iggy/config.toml",
    "/app/configs/server.toml",
    "/app/core/server/config.toml",
    "/opt/iggy/configs/server.toml",
    "/opt/iggy/core/server/config.toml",
)

#: Transport sections holding TLS material: (section path, tls table, enabled key).
TLS_SECTIONS = (
    ("tcp", "tls", "enabled"),
    ("http", "tls", "enabled"),
    ("websocket", "tls", "enabled"),
    ("quic", "certificate", None),  # QUIC always uses TLS; self_signed=true means no files
)


@dataclass
class TlsMaterial:
    """A transport's TLS certificate and key paths as the Iggy config names them."""

    transport: str  # tcp | http | websocket | quic
    cert_file: str | None
    key_file: str | None
    enabled: bool
    address: str | None  # the transport's listen address, e.g. 0.0.0.0:8090


@dataclass
class IggyConfig:
    """The parsed config, or why it could not be read."""

    path: Path | None
    data: dict[str, Any] = field(default_factory=dict)
    problem: str = ""  # set when a config was found but could not be parsed

    def tls_material(self) -> list[TlsMaterial]:
        """The TLS cert/key paths of every transport."""
        found: list[TlsMaterial] = []
        for transport, table, enabled_key in TLS_SECTIONS:
            section = self.data.get(transport)
            if not isinstance(section, dict):
                continue
            tls = section.get(table)
            if not isinstance(tls, dict):
                continue
            cert, key = tls.get("cert_file"), tls.get("key_file")
            if transport == "quic":
                enabled = bool(section.get("enabled", True)) and not tls.get("self_signed", False)
            else:
                enabled = bool(tls.get(enabled_key, False)) and bool(section.get("enabled", True))
            address = section.get("address")
            found.append(
                TlsMaterial(
                    transport,
                    cert if isinstance(cert, str) and cert else None,
                    key if isinstance(key, str) and key else None,
                    enabled,
                    address if isinstance(address, str) else None,
                )
            )
        return found


def find_iggy_config(ctx: Context) -> Path | None:
    """The configured path, else the first of the usual locations that exists."""
    configured = ctx.config.iggy.config_path
    if configured:
        return Path(configured)
    for candidate in CANDIDATES:
        if ctx.path(candidate).is_file():
            return Path(candidate)
    return None


def load_iggy_config(ctx: Context) -> IggyConfig:
    """Parse server.toml; a missing or broken file is described, never raised."""
    node_path = find_iggy_config(ctx)
    if node_path is None:
        return IggyConfig(None)
    try:
        with ctx.path(str(node_path)).open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        return IggyConfig(node_path, problem=f"cannot read: {exc.strerror or exc}")
    if len(raw) > MAX_CONFIG_BYTES:
        return IggyConfig(node_path, problem="larger than 2 MiB; not read")
    try:
        return IggyConfig(node_path, tomllib.loads(raw.decode("utf-8", "replace")))
    except tomllib.TOMLDecodeError as exc:
        return IggyConfig(node_path, problem=f"not valid TOML ({exc})")


def resolve(config_path: Path | None, file: str) -> str:
    """An absolute node path for a file named in the config.

    Iggy resolves relative paths against its working directory, which is unknown
    here; the config's own directory is the best guess for packaged installs.
    """
    if file.startswith("/") or config_path is None:
        return file
    return str(config_path.parent / file)
