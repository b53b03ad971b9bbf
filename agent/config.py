"""The agent's YAML configuration: typed, strict, and errors that name the key and line."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import yaml
from msgspec import Meta

from snapshot_agent.errors import UsageError

DEFAULT_CONFIG_PATH = Path("/etc/snapshot-agent/config.yaml")
MAX_CONFIG_BYTES = 1024 * 1024

PositiveFloat = Annotated[float, Meta(gt=0)]


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Every section refuses unknown keys; values are converted strictly (no "5" for 5)."""


class NodeConfig(_Section):
    deployment_id: int | None = None
    node_id: int | None = None
    name: str | None = None


class IggyConfig(_Section):
    config_path: str | None = None
    data_dir: str | None = None
    logs_dir: str | None = None
    http_url: str = "http://127.0.0.1:3000"
    service: str = "iggy-server.service"


class CommandCheckConfig(_Section):
    id: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]*\.[a-z0-9_.-]+$")]
    title: str
    command: Annotated[list[str], Meta(min_length=1)]
    timeout_s: PositiveFloat = 10.0
    description: str = ""


class CertificatesConfig(_Section):
    paths: list[str] = []
    endpoints: list[str] = []
    ca_bundle: str | None = None
    names: list[str] = []  # names clients use besides the hostname (service, load balancer)


class CloudConfig(_Section):
    """Cloud metadata: queried only when local DMI data says AWS or GCP (no blind probes)."""

    enabled: bool = True
    aws_url: str = "http://169.254.169.254"
    gcp_url: str = "http://metadata.google.internal"
    timeout_s: PositiveFloat = 1.0


class NetworkChecksConfig(_Section):
    dns_names: list[str] = []  # names network.dns resolves (none: resolv.conf only)
    endpoints: list[str] = []  # host:port that network.reachability connects to


class LogsConfig(_Section):
    files: list[str] = []  # log files or globs that logs.files reads (tails only)


class RootsConfig(_Section):
    """Where the node's trees are; tests and chroots point these at other directories."""

    root: str = "/"  # everything not under the trees below
    proc: str = "/proc"
    sys: str = "/sys"
    etc: str = "/etc"
    run: str = "/run"
    var_log: str = "/var/log"


class ChecksConfig(_Section):
    deadline_s: PositiveFloat = 60.0
    timeout_s: PositiveFloat = 10.0
    concurrency: Annotated[int, Meta(ge=1, le=64)] = 8
    artifact_cap_bytes: Annotated[int, Meta(ge=1024)] = 10 * 1024 * 1024
    thresholds: dict[str, dict[str, float | int | str | bool]] = {}
    commands: list[CommandCheckConfig] = []
    certificates: CertificatesConfig = CertificatesConfig()
    cloud: CloudConfig = CloudConfig()
    network: NetworkChecksConfig = NetworkChecksConfig()
    logs: LogsConfig = LogsConfig()
    roots: RootsConfig = RootsConfig()


class RedactionConfig(_Section):
    extra_keys: list[str] = []
    extra_patterns: list[str] = []
    pseudonymize: bool = False


class ArchiveConfig(_Section):
    iggy_mode: Literal["metadata", "full"] = "metadata"
    iggy_max_bytes: Annotated[int, Meta(ge=0)] = 1024 * 1024 * 1024


class S3Config(_Section):
    bucket: str
    prefix: str = "snapshots"
    region: str | None = None
    endpoint_url: str | None = None


class StorageConfig(_Section):
    local_dir: str = "/var/lib/snapshot-agent/snapshots"
    s3: S3Config | None = None


class RetentionConfig(_Section):
    plan: Literal["basic", "pro", "enterprise"] | None = "pro"
    max_count: Annotated[int, Meta(ge=1)] | None = None
    max_age_days: Annotated[int, Meta(ge=1)] | None = None


class ApiTlsConfig(_Section):
    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None


class ApiToken(_Section):
    name: str
    scope: Literal["read", "manage"]
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]


class ApiConfig(_Section):
    unix_socket: str = "/run/snapshot-agent/agent.sock"
    listen: str | None = None
    tls: ApiTlsConfig = ApiTlsConfig()
    tokens: list[ApiToken] = []


class Config(_Section):
    """The whole configuration file; every key optional."""

    node: NodeConfig = NodeConfig()
    state_dir: str = "/var/lib/snapshot-agent"
    iggy: IggyConfig = IggyConfig()
    checks: ChecksConfig = ChecksConfig()
    redaction: RedactionConfig = RedactionConfig()
    archive: ArchiveConfig = ArchiveConfig()
    storage: StorageConfig = StorageConfig()
    retention: RetentionConfig = RetentionConfig()
    api: ApiConfig = ApiConfig()


class LoadedConfig:
    """A validated config plus where it came from, so later checks can cite lines."""

    def __init__(self, config: Config, path: Path | None, root: yaml.Node | None) -> None:
        self.config = config
        self.path = path
        self._root = root

    def line_of(self, loc: tuple[str | int, ...]) -> int | None:
        """1-based line of the key at `loc` (or of its nearest present parent)."""
        return _line_of(self._root, loc)

    def error(self, loc: tuple[str | int, ...], message: str) -> UsageError:
        """A one-line config error naming file, line and key path."""
        return UsageError(_format_error(self.path, self.line_of(loc), loc, message))


def load_config(path: Path | None, *, explicit: bool) -> LoadedConfig:
    """Load and validate `path`; a missing default file means an all-defaults config."""
    if path is None or (not explicit and not path.exists()):
        return LoadedConfig(Config(), None, None)
    text = _read(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(
            f"config {path}{where}: not valid YAML ({problem}); fix the syntax"
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(
            f"config {path}: the top level must be a mapping of keys (got {type(raw).__name__})"
        )
    try:
        config = msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as exc:
        loc, message = _explain(str(exc))
        got = _value_at(raw, loc)
        shown = not isinstance(got, dict | list) and got is not _MISSING
        if shown and "unknown key" not in message and repr(got) not in message:
            # "expected float, got str" -> "expected float, got str 'soon'"
            message += f" {got!r}" if re.search(r"got \w+$", message) else f" (got {got!r})"
        raise UsageError(_format_error(path, _line_of(root, loc), loc, message)) from None
    return LoadedConfig(config, path, root)


def _read(path: Path) -> str:
    """Read a config file that is expected to be small, with errors that say what to do."""
    try:
        if not path.is_file():
            if path.exists():
                raise UsageError(f"config {path}: not a regular file; pass a YAML file")
            raise UsageError(f"config {path}: no such file; check the --config path")
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except PermissionError:
        raise UsageError(
            f"config {path}: permission denied; run as a user who can read it"
        ) from None
    except OSError as exc:
        raise UsageError(f"config {path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"config {path}: larger than 1 MiB; is this the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"config {path}: not UTF-8 text; is this the right file?") from None


_ERROR_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[(?:'|\")(.*?)(?:'|\")\]")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>[^`]*)`$")


def _explain(error: str) -> tuple[tuple[str | int, ...], str]:
    """msgspec's 'Expected `float` > 0.0 - at `$.checks.timeout_s`' -> (key path, plain words)."""
    match = _ERROR_AT.match(error.strip())
    message, path = (match["message"], match["path"] or "") if match else (error, "")
    loc: list[str | int] = []
    for key, index, quoted in _PATH_PART.findall(path):
        loc.append(int(index) if index else (key or quoted))
    if unknown := _UNKNOWN.match(message):
        loc.append(unknown["key"])
        return tuple(loc), (
            "unknown key; remove it or check its spelling (see packaging/config.example.yaml)"
        )
    # In YAML words: a list, not an "array"; a mapping, not an "object".
    message = message.replace("`", "").replace("array", "list").replace("object", "mapping")
    return tuple(loc), message[0].lower() + message[1:]


_MISSING = object()


def _value_at(raw: object, loc: tuple[str | int, ...]) -> object:
    """The raw YAML value at `loc`, to show the user what was refused."""
    for part in loc:
        if (isinstance(raw, dict) and part in raw) or (
            isinstance(raw, list) and isinstance(part, int) and part < len(raw)
        ):
            raw = raw[part]
        else:
            return _MISSING
    return raw


def _format_error(
    path: Path | None, line: int | None, loc: tuple[str | int, ...], message: str
) -> str:
    where = f"config {path}" if path else "config"
    if line is not None:
        where += f" line {line}"
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    key = key or "(top level)"
    return f"{where}: {key}: {message}"


def _line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """Walk the composed YAML tree along `loc`, returning the deepest line found."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def default_config_path() -> Path:
    """The config file used when --config is not given ($SNAPSHOT_AGENT_CONFIG overrides)."""
    return Path(os.environ.get("SNAPSHOT_AGENT_CONFIG", str(DEFAULT_CONFIG_PATH)))
