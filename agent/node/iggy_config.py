"""Locating and reading the Iggy server's TOML config (read-only; secrets stay in it)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapshot_agent.core.context import Context

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
    ("quic", "certificate", None),  # QUIC always uses TLS
)


@dataclass
class TlsMaterial:
    """A transport's TLS certificate and key paths as the Iggy config names them."""

    transport: str  # tcp | http | websocket | quic
    cert_file: str | None
    key_file: str | None
    enabled: bool  # the transport is on and speaks TLS
    address: str | None  # the transport's listen address, e.g. 0.0.0.0:8090
    # self_signed = true: QUIC always makes a throwaway certificate and ignores the
    # files; TCP makes one only while cert_file does not exist (Iggy's config.toml).
    self_signed: bool = False

    @property
    def files_ignored(self) -> bool:
        """True when the broker never reads cert_file/key_file (QUIC with self_signed)."""
        return self.transport == "quic" and self.self_signed


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
            enabled = bool(section.get("enabled", True))
            if enabled_key is not None:
                enabled = enabled and bool(tls.get(enabled_key, False))
            address = section.get("address")
            found.append(
                TlsMaterial(
                    transport,
                    cert if isinstance(cert, str) and cert else None,
                    key if isinstance(key, str) and key else None,
                    enabled,
                    address if isinstance(address, str) else None,
                    self_signed=tls.get("self_signed") is True,
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


def locate(ctx: Context, config_path: Path | None, file: str, broker_cwd: str = "") -> str:
    """The node path of a file the config names (relative paths are the broker's).

    Iggy resolves relative paths against its working directory: the running
    broker's when known, else the config's directory and the two above it (a
    source checkout keeps core/certs/ two levels above core/server/config.toml).
    The first that exists wins; when none does, the most likely one is returned,
    so the finding names a concrete path.
    """
    if file.startswith("/"):
        return file
    bases = [broker_cwd] if broker_cwd else []
    if config_path is not None:
        bases += [str(p) for p in (config_path.parent, *config_path.parent.parents[:2])]
    candidates = [str(Path(base) / file) for base in bases] or [file]
    return next((c for c in candidates if ctx.path(c).exists()), candidates[0])


# -- client transports (node/ports.py turns them into the broker's ports) ----------------

#: Client transport sections: name -> (protocol, default port) (iggy-facts.md, Network).
TRANSPORT_DEFAULTS = {
    "tcp": ("tcp", 8090),
    "quic": ("udp", 8080),
    "http": ("tcp", 3000),
    "websocket": ("tcp", 8092),
}


@dataclass
class Transport:
    """A client transport section of the config: whether it is on and where it binds."""

    name: str  # tcp | quic | http | websocket
    proto: str  # tcp | udp (QUIC)
    enabled: bool  # `enabled`, true when absent
    address: str | None  # as written, e.g. "0.0.0.0:8090"; None when the section has none
    port: int | None  # from `address`, the default port without one, None when unparseable


def transports(config: IggyConfig) -> list[Transport]:
    """The [tcp], [quic], [http] and [websocket] sections the config has.

    A missing section is left out (a 0.5.x config has no [websocket]).
    """
    found: list[Transport] = []
    for name, (proto, default_port) in TRANSPORT_DEFAULTS.items():
        section = config.data.get(name)
        if not isinstance(section, dict):
            continue
        address = section.get("address")
        address = address if isinstance(address, str) else None
        port: int | None = default_port
        if address is not None:
            _, sep, tail = address.strip().rpartition(":")
            port = int(tail) if sep and tail.isdigit() and 0 < int(tail) < 65536 else None
        found.append(Transport(name, proto, bool(section.get("enabled", True)), address, port))
    return found
