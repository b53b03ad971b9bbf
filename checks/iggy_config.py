"""iggy.config: the broker's effective configuration, audited for what puts it at risk.

The config is the file the broker reads with its IGGY_* environment laid over it, as
node/iggy_install.discover() finds it. Secret values are compared, never shown: the
findings name keys and files, and the copy in the archive passes the redactor.
"""

from __future__ import annotations

import base64
import binascii
import os
import posixpath
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.addresses import is_loopback, parse_listen_address
from snapshot_agent.node.iggy_config import (
    DEV_CERT_FINGERPRINTS,
    MAX_CONFIG_BYTES,
    SECRET_KEYS,
    locate,
    lookup,
    transports,
)
from snapshot_agent.node.iggy_install import IggyInstall, discover
from snapshot_agent.node.mounts import probe_all, probe_budget
from snapshot_agent.node.tls_inventory import CertSource, read_cert_file

#: The JWT secret Iggy 0.5-0.7 shipped in its config (iggy-facts.md; server-0.7.0:
#: core/server/config.toml): anyone can sign a token the broker accepts.
DEFAULT_JWT_SECRET = "top_secret$iggy123$_jwt_HS256_key#!"
DEFAULT_ROOT = ("iggy", "iggy")  # 0.5's root user, or --with-default-root-credentials
RUNTIME_CONFIG = "current_config.toml"


def _secret_state(value: Any) -> str:
    """'default', 'set' or 'empty' for a secret value (never the value)."""
    if not isinstance(value, str) or not value:
        return "empty"
    return "default" if value == DEFAULT_JWT_SECRET else "set"


# -- the rules --------------------------------------------------------------------------


def _config_problem(install: IggyInstall) -> list[Finding]:
    """WARN: a config exists but cannot be parsed; the broker cannot start with it."""
    if not install.config.problem:
        return []
    return [
        Finding(
            Severity.WARN,
            f"Iggy config {install.config.path} is unusable ({install.config.problem}); "
            "the broker refuses to start with it, and nothing below could be audited",
            "Fix the file (a TOML linter such as `taplo check` names the line) before the "
            "broker restarts; compare with the config of a healthy node.",
            str(install.config.path),
        )
    ]


def _no_config(install: IggyInstall) -> list[Finding]:
    """INFO: no config file was found; the broker runs on its built-in defaults."""
    if install.config.path is not None:
        return []
    return [
        Finding(
            Severity.INFO,
            "no Iggy server config found, so the broker runs on its built-in defaults "
            "(and IGGY_* variables); " + "; ".join(install.looked_for),
            "If the broker reads a config elsewhere, set iggy.config_path in the agent config.",
        )
    ]


def _default_jwt_secret(install: IggyInstall, runtime: RuntimeConfig) -> list[Finding]:
    """FAIL: the JWT secret shipped in Iggy's sample config signs the broker's tokens.

    Judged on the config with its overrides and on runtime/current_config.toml, the
    effective config: 0.6 and 0.7 images run on built-in defaults that hold this secret,
    with no config file at all (server-0.7.0:core/server/config.toml, embedded).
    """
    jwt = ("http.jwt.encoding_secret", "http.jwt.decoding_secret")
    keys = [key for key in jwt if _secret_state(install.setting(key)) == "default"]
    where = _where(install, keys[0]) if keys else ""
    if not keys:
        keys = [key for key in jwt if runtime.secrets().get(key) == "default"]
        where = runtime.path
    if not keys or install.setting("http.enabled", True) is False:
        return []
    return [
        Finding(
            Severity.FAIL,
            f"{' and '.join(keys)} is the JWT secret published in Iggy's sample config: "
            "anyone can sign a token the HTTP API accepts, as any user",
            "Set [http.jwt] encoding_secret and decoding_secret to a long random value "
            "(`openssl rand -base64 48`), or leave them empty on 0.8+ for a random secret "
            "per start; restart the broker. Existing tokens stop working.",
            where,
        )
    ]


def _default_root_credentials(install: IggyInstall) -> list[Finding]:
    """FAIL: root was created as iggy/iggy (the env asked for it, or the server flag did).

    IGGY_ROOT_PASSWORD only counts when the root user is first created (later starts reuse
    the stored one: server-0.8.0:core/server/src/main.rs), so the finding says "created
    with" and asks to check, rather than stating today's password.
    """
    env = install.env
    from_env = (env.get("IGGY_ROOT_USERNAME", "iggy"), env.get("IGGY_ROOT_PASSWORD")) == (
        DEFAULT_ROOT
    )
    argv = install.broker.argv if install.broker else ()
    flag = "--with-default-root-credentials" in argv
    if not (from_env or flag):
        return []
    how = (
        "the broker runs with --with-default-root-credentials"
        if flag
        else ("IGGY_ROOT_PASSWORD in the broker's environment is the default")
    )
    return [
        Finding(
            Severity.FAIL,
            f"the root user was created with the default credentials iggy/iggy ({how}); "
            "unless someone changed it since, anyone who can reach the broker is root",
            "Try `iggy -u iggy -p iggy me`: if it logs in, change the password now (`iggy -u "
            "iggy -p iggy user password iggy`, which prompts for the new one), then start "
            "the broker with IGGY_ROOT_PASSWORD from a secret store and without "
            "--with-default-root-credentials.",
        )
    ]


def _is_loopback(address: str) -> bool:
    """True when a listen address only accepts connections from this node."""
    return is_loopback(parse_listen_address(address).host)


def _tls_on(install: IggyInstall, transport: str) -> bool:
    """True when a transport speaks TLS (QUIC always does)."""
    if transport == "quic":
        return True
    return install.setting(f"{transport}.tls.enabled", False) is True


def _plaintext_listeners(install: IggyInstall) -> list[Finding]:
    """WARN: a transport listens beyond loopback without TLS: credentials cross in clear."""
    out = []
    for t in transports(install.config):
        if not t.enabled or t.address is None or _is_loopback(t.address):
            continue
        if _tls_on(install, t.name):
            continue
        out.append(
            Finding(
                Severity.WARN,
                f"[{t.name}] listens on {t.address} without TLS: passwords, tokens and "
                "messages cross the network in clear text",
                f"Enable [{t.name}.tls] with a certificate from your CA, or bind "
                f"[{t.name}] address to 127.0.0.1 if only local clients use it.",
                _where(install, f"{t.name}.address"),
            )
        )
    return out


def _encryption(install: IggyInstall) -> list[Finding]:
    """INFO when at-rest encryption is off; FAIL when it is on with an unusable key."""
    enabled = install.setting("system.encryption.enabled", False) is True
    if not enabled:
        return [
            Finding(
                Severity.INFO,
                "message encryption at rest is off ([system.encryption] enabled = false): "
                "segment files are readable by anyone who can read the disk",
                "Fine when the volume is encrypted (LUKS, EBS encryption). Otherwise set "
                "[system.encryption] enabled = true with a base64 32-byte key "
                "(`openssl rand -base64 32`) on a new deployment: existing data is not "
                "re-encrypted.",
                _where(install, "system.encryption.enabled"),
            )
        ]
    key = install.setting("system.encryption.key", "")
    if _is_aes256_key(key):
        return []
    return [
        Finding(
            Severity.FAIL,
            "[system.encryption] is enabled but its key is not a base64-encoded 32-byte "
            "key: the broker cannot encrypt or decrypt messages",
            "Set [system.encryption] key (or IGGY_SYSTEM_ENCRYPTION_KEY) to the key the "
            "data was written with; a new key cannot read existing segments.",
            _where(install, "system.encryption.key"),
        )
    ]


def _is_aes256_key(value: Any) -> bool:
    """True for base64 text that decodes to 32 bytes."""
    if not isinstance(value, str) or not value:
        return False
    try:
        return len(base64.b64decode(value, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def _dev_certificates(ctx: Context, install: IggyInstall) -> list[Finding]:
    """FAIL: a TLS transport uses one of the certificates committed to Iggy's repository."""
    out = []
    cwd = install.broker.cwd if install.broker else ""
    for material in install.config.tls_material():
        if not material.enabled or not material.cert_file or material.files_ignored:
            continue
        path = locate(ctx, install.config.path, material.cert_file, cwd)
        found = read_cert_file(ctx, CertSource(path, f"iggy [{material.transport}] TLS"))
        for cert in found.certs:
            name = DEV_CERT_FINGERPRINTS.get(cert.fingerprint)
            if name is None:
                continue
            out.append(
                Finding(
                    Severity.FAIL,
                    f"[{material.transport}.tls] cert_file {path} is Iggy's development "
                    f"certificate {name}: its private key is public, so anyone can "
                    "impersonate this broker or read its traffic",
                    "Issue a certificate from your own CA (or ACME), point cert_file and "
                    "key_file at it and restart the broker.",
                    path,
                )
            )
    return out


@dataclass(frozen=True)
class RuntimeConfig:
    """runtime/current_config.toml: the effective config Iggy 0.6-0.8 writes at start."""

    path: str = ""  # node path; "" when there is no data directory to look in
    data: dict[str, Any] = field(default_factory=dict)  # {} when absent or unreadable

    def secrets(self) -> dict[str, str]:
        """{key: 'default' | 'set'} of the secret keys it holds a value for."""
        states = {key: _secret_state(lookup(self.data, key)) for key in SECRET_KEYS}
        return {k: v for k, v in states.items() if v != "empty"}


def read_runtime_config(ctx: Context, install: IggyInstall) -> RuntimeConfig:
    """The broker's runtime/current_config.toml, never waited on if its mount hangs."""
    if not install.data_dir or install.data_dir_state != "exists":
        return RuntimeConfig()
    runtime = install.setting("system.runtime.path", "runtime")
    runtime = runtime if isinstance(runtime, str) and runtime else "runtime"
    path = posixpath.join(install.data_dir, runtime, RUNTIME_CONFIG)

    def parse() -> dict[str, Any]:
        """Read (bounded) and parse the file; {} when it cannot be."""
        try:
            with ctx.path(path).open("rb") as fh:
                raw = fh.read(MAX_CONFIG_BYTES + 1)
            return tomllib.loads(raw[:MAX_CONFIG_BYTES].decode("utf-8", "replace"))
        except (OSError, tomllib.TOMLDecodeError):
            return {}

    probe = probe_all({"read": parse}, probe_budget(ctx, 3.0))["read"]
    return RuntimeConfig(path, probe.value if probe.done and probe.value else {})


def _runtime_config_secrets(ctx: Context, runtime: RuntimeConfig) -> list[Finding]:
    """WARN (FAIL when others can read it): Iggy wrote its secrets into current_config.toml."""
    path, secrets = runtime.path, runtime.secrets()
    if not secrets:
        return []
    mode = _mode(ctx, path)
    world = mode is not None and bool(mode & stat.S_IROTH) and _reachable_by_all(ctx, path)
    return [
        Finding(
            Severity.FAIL if world else Severity.WARN,
            f"{path} holds the broker's secrets in plain text ({', '.join(sorted(secrets))})"
            + (f" and is readable by every user (mode {mode:o})" if world else ""),
            "Iggy 0.6-0.8 write their effective config, secrets included, to this file at "
            "every start (the runtime directory is recreated, so a chmod does not last): "
            "keep the data directory 0700 or run the broker with UMask=0077 (systemd) so "
            "the file is created private, exclude it from backups you share, and upgrade to "
            "a release that leaves the secrets out; rotate the secrets if the file was ever "
            "copied off the node.",
            path,
        )
    ]


def _config_readable_by_others(ctx: Context, install: IggyInstall) -> list[Finding]:
    """WARN: the config file holds secrets and every user can read it."""
    path = install.config.path
    if path is None:
        return []
    secrets = [k for k in SECRET_KEYS if _secret_state(lookup(install.config.data, k)) != "empty"]
    secrets = [k for k in secrets if k not in install.config.overrides]  # in the file itself
    mode = _mode(ctx, str(path))
    if not secrets or mode is None or not mode & stat.S_IROTH:
        return []
    if not _reachable_by_all(ctx, str(path)):
        return []  # a directory above it keeps other users out
    return [
        Finding(
            Severity.WARN,
            f"{path} holds secrets ({', '.join(secrets)}) and every user on the node can "
            f"read it (mode {mode:o})",
            f"`chmod 640 {path}` and give it to the broker's group, or move the secrets "
            "into IGGY_* variables from a secret store (systemd LoadCredential=, EnvironmentFile= "
            "with mode 600).",
            str(path),
        )
    ]


def _mode(ctx: Context, node_path: str) -> int | None:
    """A file's permission bits, None when it cannot be stat'ed."""
    try:
        return stat.S_IMODE(os.stat(ctx.path(node_path)).st_mode)
    except OSError:
        return None


def _reachable_by_all(ctx: Context, node_path: str) -> bool:
    """True when every directory above a file lets other users through (o+x).

    For a path inside a container's root (/proc/PID/root/...), the directories from the
    container's root down count; /proc/PID itself is the kernel's, not the broker's.
    """
    parts = PurePosixPath(node_path).parts
    start = 4 if parts[:2] == ("/", "proc") and len(parts) > 3 and parts[3] == "root" else 1
    for depth in range(start, len(parts) - 1):
        directory = str(PurePosixPath(*parts[: depth + 1]))
        mode = _mode(ctx, directory)
        if mode is not None and not mode & stat.S_IXOTH:
            return False
    return True


def _where(install: IggyInstall, key: str) -> str:
    """Where a setting comes from: its IGGY_* variable, else the config file."""
    if key in install.config.overrides:
        return f"{install.config.overrides[key]} (environment of the broker)"
    return str(install.config.path or "built-in default")


# -- the check -------------------------------------------------------------------------


def judge_config(ctx: Context, install: IggyInstall, runtime: RuntimeConfig) -> list[Finding]:
    """Every rule over the broker's effective config."""
    if install.config.problem:
        return _config_problem(install)
    return [
        *_no_config(install),
        *_default_jwt_secret(install, runtime),
        *_default_root_credentials(install),
        *_plaintext_listeners(install),
        *_encryption(install),
        *_dev_certificates(ctx, install),
        *_runtime_config_secrets(ctx, runtime),
        *_config_readable_by_others(ctx, install),
    ]


def _facts(install: IggyInstall, runtime: RuntimeConfig) -> dict[str, Any]:
    """What the audit looked at, without a single secret value."""
    return {
        **install.describe(),
        "jwt_secret": _secret_state(install.setting("http.jwt.encoding_secret")),
        "encryption": install.setting("system.encryption.enabled", False) is True,
        "transports": [
            {
                "transport": t.name,
                "enabled": t.enabled,
                "address": t.address,
                "tls": _tls_on(install, t.name),
                "loopback_only": _is_loopback(t.address) if t.address else None,
            }
            for t in transports(install.config)
        ],
        "runtime_config": runtime.path or None,
        "runtime_config_secrets": sorted(runtime.secrets()),
    }


@check(
    id="iggy.config",
    category="iggy",
    title="Iggy configuration",
    description=(
        "The broker's config with its IGGY_* overrides: default JWT secret or root "
        "credentials, plain-text listeners beyond loopback, encryption at rest, Iggy's "
        "development certificates, secrets written to runtime/current_config.toml."
    ),
    timeout_s=10,
)
def iggy_config(ctx: Context) -> Result:
    """The effective Iggy config, audited.

    Verdicts:
    - pass: a 0.8 config on loopback with an empty (per-start random) JWT secret
      [test_iggy_config_healthy_passes]
    - fail: the JWT secret of Iggy's sample config [test_iggy_config_default_jwt_secret_fails]
    - fail: the same secret in runtime/current_config.toml of an image without a config
      file [test_iggy_config_default_jwt_secret_of_an_image_without_a_config]
    - fail: root iggy/iggy from the environment or the server flag
      [test_iggy_config_default_root_credentials_fail]
    - warn: TCP on 0.0.0.0 without TLS; TLS on it passes
      [test_iggy_config_plaintext_listener_warns]
    - fail: encryption on with a key that is not 32 bytes of base64
      [test_iggy_config_bad_encryption_key_fails]
    - fail: Iggy's development certificate as cert_file
      [test_iggy_config_development_certificate_fails]
    - warn: secrets in runtime/current_config.toml; fail when world-readable
      [test_iggy_config_runtime_config_secrets]
    - warn: a world-readable config holding secrets [test_iggy_config_world_readable_secrets]
    - pass: the same file in a directory other users cannot enter
      [test_iggy_config_world_readable_file_in_a_private_directory_passes]
    - warn: a config that does not parse [test_iggy_config_garbage_warns]
    - skipped: no broker, config or data directory [test_iggy_config_skipped_without_iggy]
    """
    install = discover(ctx)
    if not install.found:
        return Result.skipped(install.skip_reason())
    if install.config.path is not None:
        ctx.copy_file(str(install.config.path), "server.toml")  # redacted on its way out
    runtime = read_runtime_config(ctx, install)
    findings = judge_config(ctx, install, runtime)
    where = str(install.config.path or "built-in defaults")
    overrides = len(install.config.overrides)
    ok = f"{where}" + (f" with {overrides} IGGY_* override(s)" if overrides else "")
    return Result.from_findings(
        findings, ok=f"{ok}: nothing risky found", data=_facts(install, runtime)
    )
