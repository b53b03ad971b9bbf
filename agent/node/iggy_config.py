"""Locating and reading the Iggy server's TOML config (read-only; secrets stay in it)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapshot_agent.core.context import Context
from snapshot_agent.node.addresses import parse_listen_address

MAX_CONFIG_BYTES = 2 * 1024 * 1024

#: Where the broker looks for its config, relative to its working directory, newest first:
#: 0.7+ (server-0.8.0:core/configs/src/server_config/server.rs DEFAULT_CONFIG_PATH), then
#: 0.4-0.6 (server-0.5.0:core/server/src/configs/config_provider.rs).
DEFAULT_RELATIVE = ("core/server/config.toml", "configs/server.toml")

#: Where packaged, containerised and source installs keep server.toml (iggy-facts.md).
CANDIDATES = (
    "/etc/iggy/server.toml",
    "/etc/iggy/config.toml",
    "/app/configs/server.toml",
    "/app/core/server/config.toml",
    "/opt/iggy/configs/server.toml",
    "/opt/iggy/core/server/config.toml",
)

#: Config keys whose values are secrets (iggy-facts.md, Configuration): compared, never shown.
SECRET_KEYS = (
    "http.jwt.encoding_secret",
    "http.jwt.decoding_secret",
    "system.encryption.key",
    "data_maintenance.archiver.s3.key_secret",  # 0.4-0.5
    "cluster.auth.shared_secret",  # main
    "cluster.auth.previous_shared_secret",
)

#: The development certificates committed to the Iggy repository (core/certs/): their
#: private key is public, so a node using them has no transport security at all.
DEV_CERT_FINGERPRINTS = {
    "F3:CB:B3:BB:CB:99:E5:F6:E9:B7:A6:F2:60:4D:4F:4A:08:CA:DE:58:9A:4A:3F:31:A2:43:7D:3B:32:BB:13:21":
        "iggy_cert.pem",
    "78:01:B3:12:24:41:30:3A:0A:B3:99:EB:5F:28:75:2B:0A:85:97:47:AF:32:69:D9:8A:E9:79:F3:6B:68:F8:F9":
        "iggy_ca_cert.pem",
}  # fmt: skip

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
    overrides: dict[str, str] = field(default_factory=dict)  # dotted key -> IGGY_* variable

    def setting(self, dotted: str, default: Any = None) -> Any:
        """A value by dotted key path ("http.jwt.encoding_secret"), overrides applied."""
        return lookup(self.data, dotted, default)

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


def lookup(data: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """A value by dotted key path in a parsed TOML document; `default` when absent."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def read_iggy_config(ctx: Context, node_path: str) -> IggyConfig:
    """Parse the server config at a node path; a missing or broken file is described."""
    path = Path(node_path)
    try:
        with ctx.path(node_path).open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        return IggyConfig(path, problem=f"cannot read: {exc.strerror or exc}")
    if len(raw) > MAX_CONFIG_BYTES:
        return IggyConfig(path, problem="larger than 2 MiB; not read")
    try:
        return IggyConfig(path, tomllib.loads(raw.decode("utf-8", "replace")))
    except tomllib.TOMLDecodeError as exc:
        return IggyConfig(path, problem=f"not valid TOML ({exc})")


# -- IGGY_* environment overrides -------------------------------------------------------

#: Variables Iggy reads itself rather than as config keys
#: (server-0.8.0:core/configs/src/configs_impl/typed_env_provider.rs, IGNORED_ENV_VARS).
NOT_CONFIG_KEYS = frozenset(
    {
        "IGGY_CI_BUILD",
        "IGGY_CONFIG_PATH",
        "IGGY_CONNECTORS_CONFIG_PATH",
        "IGGY_MCP_CONFIG_PATH",
        "IGGY_ROOT_PASSWORD",
        "IGGY_ROOT_USERNAME",
        "IGGY_TEST_CLEANUP_DISABLED",
        "IGGY_TEST_VERBOSE",
        "IGGY_ENV_PATH",
    }
)


def env_value(text: str) -> Any:
    """An override's value as Iggy parses it: true/false, integers, floats, [a, b], text.

    After parse_env_value_to_json in server-0.8.0:core/configs/src/configs_impl/parsing.rs.
    """
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [env_value(item.strip().strip("\"'")) for item in inner.split(",")] if inner else []
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


#: Tables every server config has (server-0.8.0:core/server/config.toml), so an override
#: is placed right even when the file on the node leaves its table out.
KNOWN_TABLES: dict[str, Any] = {
    "system": {n: {} for n in ("logging", "encryption", "sharding", "memory_pool", "runtime")},
    "http": {"jwt": {}, "tls": {}, "metrics": {}},
    "tcp": {"tls": {}},
    "quic": {"certificate": {}},
    "websocket": {"tls": {}},
    "cluster": {"auth": {}},
}


def key_path(table: dict[str, Any], name: str, top: bool = True) -> list[str] | None:
    """The config key path an IGGY_ variable names, matched against known tables.

    `HTTP_JWT_ENCODING_SECRET` -> ["http", "jwt", "encoding_secret"]: key names hold
    underscores too, so each table's keys are tried, longest first, and what is left
    after the deepest table that matches becomes the leaf key. None when no top-level
    table matches (not a config key this agent can place).
    """
    for key in sorted(table, key=len, reverse=True):
        upper = key.upper()
        if name == upper:
            return [key]
        sub = table[key]
        if isinstance(sub, dict) and name.startswith(upper + "_"):
            rest = key_path(sub, name[len(upper) + 1 :], top=False)
            if rest is not None:
                return [key, *rest]
    return None if top or not name else [name.lower()]


def _merged(known: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The file's tables and keys over the known tables (for matching names only)."""
    out = dict(known)
    for key, value in data.items():
        base = out.get(key)
        both = isinstance(base, dict) and isinstance(value, dict)
        out[key] = _merged(base, value) if both else value
    return out


def apply_env_overrides(config: IggyConfig, env: dict[str, str]) -> None:
    """Overlay the broker's IGGY_* variables on the parsed file, as Iggy itself does.

    Empty values are ignored (Iggy skips them); each applied override is recorded in
    `config.overrides` as {"http.jwt.encoding_secret": "IGGY_HTTP_JWT_ENCODING_SECRET"}.
    """
    for name in sorted(env):
        value = env[name]
        if not name.startswith("IGGY_") or name in NOT_CONFIG_KEYS or not value:
            continue
        path = key_path(_merged(KNOWN_TABLES, config.data), name[len("IGGY_") :])
        if not path:
            continue
        table = config.data
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                break
        else:
            table[path[-1]] = env_value(value)
            config.overrides[".".join(path)] = name


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
        port = parse_listen_address(address).port if address is not None else default_port
        found.append(Transport(name, proto, bool(section.get("enabled", True)), address, port))
    return found
