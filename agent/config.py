"""The agent's YAML configuration: typed, strict, bounded, and errors that name the key and line."""

from __future__ import annotations

import os
import re
import stat
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta

from snapshot_agent.core.check import ID_REGEX
from snapshot_agent.errors import UsageError

DEFAULT_CONFIG_PATH = Path("/etc/snapshot-agent/config.yaml")
CONFIG_VARIABLE = "SNAPSHOT_AGENT_CONFIG"

# What a config may hold. A real one is a few KiB, five levels deep, a few hundred
# values; these bounds are far above that and far below what hurts the agent.
MAX_CONFIG_BYTES = 1024 * 1024  # the file as read
MAX_EXPANDED_BYTES = MAX_CONFIG_BYTES  # all its text once aliases are expanded
MAX_VALUES = 10_000  # keys, items and scalars once aliases are expanded
MAX_DEPTH = 16  # mappings and lists inside each other, aliases followed
MAX_SECONDS = 3600.0  # any duration: a snapshot that needs an hour is not a snapshot
MAX_CLOUD_TIMEOUT_S = 60.0
MAX_ARTIFACT_CAP = 1024**3  # 1 GiB per evidence file
MAX_IGGY_BYTES = 1024**4  # 1 TiB of Iggy data in one archive
MAX_PROBES = 64  # names and endpoints contacted over the network
MAX_PATHS = 256  # files and globs read
MAX_COMMANDS = 64  # custom command checks
MAX_ARGS = 256  # arguments of one command
MAX_RULES = 256  # extra redaction keys or patterns
MAX_TOKENS = 64
MAX_ID = 2**63 - 1  # deployment and node ids are int64 in the supervisor

NO_NUL_REGEX = r"^[^\x00]*\Z"
ONE_LINE_REGEX = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]*\Z"

#: msgspec's regex errors, in words (the key is the regex as msgspec quotes it).
_PATTERN_WORDS = {
    repr(ID_REGEX): "a check id like custom.raid: a lowercase area, a dot, then "
    "lowercase letters, digits, '_', '.' or '-'",
    repr(NO_NUL_REGEX): "text without NUL characters",
    repr(ONE_LINE_REGEX): "one line of text without control characters",
}

Seconds = Annotated[float, Meta(gt=0, le=MAX_SECONDS)]
NodeId = Annotated[int, Meta(ge=0, le=MAX_ID)]
Argument = Annotated[str, Meta(min_length=1, pattern=NO_NUL_REGEX)]
Title = Annotated[str, Meta(min_length=1, max_length=200, pattern=ONE_LINE_REGEX)]
Description = Annotated[str, Meta(max_length=2000, pattern=ONE_LINE_REGEX)]
Probes = Annotated[list[str], Meta(max_length=MAX_PROBES)]
Paths = Annotated[list[str], Meta(max_length=MAX_PATHS)]
Rules = Annotated[list[str], Meta(max_length=MAX_RULES)]


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Every section refuses unknown keys; values are converted strictly (no "5" for 5)."""


class NodeConfig(_Section):
    deployment_id: NodeId | None = None
    node_id: NodeId | None = None
    name: str | None = None


class IggyConfig(_Section):
    config_path: str | None = None
    data_dir: str | None = None
    logs_dir: str | None = None
    # None: the broker's [http] address from its config (0.0.0.0 -> 127.0.0.1), else :3000.
    http_url: Annotated[str, Meta(pattern=r"^https?://[^\s]+\Z")] | None = None
    service: str = "iggy-server.service"
    # The Iggy user the agent logs in as for /stats; its password or a personal access
    # token only ever in a file (never inline, never on a command line).
    username: str | None = None
    password_file: str | None = None
    token_file: str | None = None
    native_snapshot: bool = False  # also fetch Iggy's own POST /snapshot zip


class CommandCheckConfig(_Section):
    id: Annotated[str, Meta(pattern=ID_REGEX)]
    title: Title
    command: Annotated[list[Argument], Meta(min_length=1, max_length=MAX_ARGS)]
    timeout_s: Seconds = 10.0
    description: Description = ""
    # Variables of the agent's environment the command gets; by default it gets only a
    # minimal one (PATH, HOME, TZ, the C locale), never the agent's secrets.
    pass_env: Annotated[
        list[Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]], Meta(max_length=64)
    ] = []


class CertificatesConfig(_Section):
    paths: Paths = []
    endpoints: Probes = []
    ca_bundle: str | None = None
    names: Probes = []  # names clients use besides the hostname (service, load balancer)


class CloudConfig(_Section):
    """Cloud metadata: queried only when local DMI data says AWS or GCP (no blind probes)."""

    enabled: bool = True
    aws_url: str = "http://169.254.169.254"
    gcp_url: str = "http://metadata.google.internal"
    timeout_s: Annotated[float, Meta(gt=0, le=MAX_CLOUD_TIMEOUT_S)] = 1.0


class NetworkChecksConfig(_Section):
    dns_names: Probes = []  # names network.dns resolves (none: resolv.conf only)
    endpoints: Probes = []  # host:port that network.reachability connects to


class LogsConfig(_Section):
    files: Paths = []  # log files or globs that logs.files reads (tails only)


class RootsConfig(_Section):
    """Where the node's trees are; tests and chroots point these at other directories."""

    root: str = "/"  # everything not under the trees below
    proc: str = "/proc"
    sys: str = "/sys"
    etc: str = "/etc"
    run: str = "/run"
    var_log: str = "/var/log"


class ChecksConfig(_Section):
    deadline_s: Seconds = 60.0
    timeout_s: Seconds = 10.0
    concurrency: Annotated[int, Meta(ge=1, le=64)] = 8
    artifact_cap_bytes: Annotated[int, Meta(ge=1024, le=MAX_ARTIFACT_CAP)] = 10 * 1024 * 1024
    thresholds: dict[str, dict[str, float | int | str | bool]] = {}
    commands: Annotated[list[CommandCheckConfig], Meta(max_length=MAX_COMMANDS)] = []
    certificates: CertificatesConfig = CertificatesConfig()
    cloud: CloudConfig = CloudConfig()
    network: NetworkChecksConfig = NetworkChecksConfig()
    logs: LogsConfig = LogsConfig()
    roots: RootsConfig = RootsConfig()


class RedactionConfig(_Section):
    extra_keys: Rules = []  # more words that mark a secret key name (case-insensitive)
    extra_patterns: Rules = []  # regexes: each match (or its group "value") is removed
    pseudonymize: bool = False  # IPs and host names -> keyed pseudonyms

    def __post_init__(self) -> None:
        for index, source in enumerate(self.extra_patterns):
            try:
                pattern = re.compile(source)
            except re.error as exc:
                raise ValueError(
                    f"extra_patterns[{index}] {source!r} is not a regular expression ({exc})"
                ) from None
            if pattern.fullmatch(""):
                raise ValueError(
                    f"extra_patterns[{index}] {source!r} matches the empty string; "
                    "make it match the secret itself"
                )


class ArchiveConfig(_Section):
    iggy_mode: Literal["metadata", "full"] = "metadata"
    iggy_max_bytes: Annotated[int, Meta(ge=0, le=MAX_IGGY_BYTES)] = 1024 * 1024 * 1024
    compression_level: Annotated[int, Meta(ge=0, le=9)] = 6  # deflate; 0 stores
    # Threads that compress; None: one per core (at most 4). Members that do not shrink
    # are stored whatever the level.
    threads: Annotated[int, Meta(ge=1, le=64)] | None = None
    # X25519 public keys (PEM files) the archive is encrypted to: *.zip.enc, AES-256-GCM
    # in authenticated chunks; `snapshot-agent decrypt` with one of the private keys.
    encrypt_to: Paths = []
    # Sign manifest.json (manifest.sig) with the node's Ed25519 key, made on first use.
    sign: bool = True
    signing_key: str | None = None  # default: <state_dir>/keys/node-ed25519.pem
    # A group (name or gid) that may read the archives (0640); by default only the
    # owner may (0600): archives hold what only root could read on the node.
    group: str | Annotated[int, Meta(ge=0, le=2**32 - 2)] | None = None  # -1 means "none"


class S3Config(_Section):
    bucket: Annotated[
        str, Meta(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]\Z")
    ]
    prefix: Annotated[str, Meta(max_length=512, pattern=ONE_LINE_REGEX)] = "snapshots"
    region: str | None = None
    endpoint_url: Annotated[str, Meta(pattern=r"^https?://[^\s]+\Z")] | None = None
    # Server-side encryption: AES256 (S3-managed keys) or aws:kms (with kms_key_id).
    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    # awscli's shape: 8 MiB parts, 10 in flight (memory: 8 MiB x 11 at the most).
    part_size_mb: Annotated[int, Meta(ge=5, le=5120)] = 8
    concurrency: Annotated[int, Meta(ge=1, le=16)] = 10  # parts in flight
    max_attempts: Annotated[int, Meta(ge=1, le=20)] = 5  # per request, with backoff
    presign_ttl_s: Annotated[int, Meta(ge=1, le=7 * 86400)] = 900  # download URLs


class StorageConfig(_Section):
    local_dir: str = "/var/lib/snapshot-agent/snapshots"
    s3: S3Config | None = None


class RetentionConfig(_Section):
    plan: Literal["basic", "pro", "enterprise"] | None = "pro"
    max_count: Annotated[int, Meta(ge=1, le=100_000)] | None = None
    max_age_days: Annotated[int, Meta(ge=1, le=3650)] | None = None


class ApiTlsConfig(_Section):
    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None


class ApiToken(_Section):
    name: str
    scope: Literal["read", "manage"]
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")]


class ApiConfig(_Section):
    unix_socket: str = "/run/snapshot-agent/agent.sock"
    group: str | Annotated[int, Meta(ge=0)] | None = None  # the socket's group (0660)
    listen: str | None = None
    tls: ApiTlsConfig = ApiTlsConfig()
    tokens: Annotated[list[ApiToken], Meta(max_length=MAX_TOKENS)] = []


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


@dataclass(frozen=True)
class _Source:
    """A config file to read and who named it: --config, the variable, or the default."""

    path: Path
    named_by: Literal["--config", "variable", "default"]

    @property
    def label(self) -> str:
        """'config PATH', saying when the variable chose it."""
        via = f" (from ${CONFIG_VARIABLE})" if self.named_by == "variable" else ""
        return f"config {_one_line(str(self.path))}{via}"


def load_config(path: Path | None, *, explicit: bool) -> LoadedConfig:
    """Load and validate `path`; a missing default file means an all-defaults config.

    `explicit` is --config. A path that $SNAPSHOT_AGENT_CONFIG names counts as explicit
    too: a mistyped variable is an error, not a silent fallback to the defaults.
    """
    source = _source(path, explicit)
    if source is None:
        return LoadedConfig(Config(), None, None)
    root = _compose(source, _read(source))
    raw = _construct(source, root)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(
            f"{source.label}: the top level must be a mapping of keys (got {type(raw).__name__})"
        )
    loaded = LoadedConfig(_convert(source, root, raw), source.path, root)
    _refuse_duplicate_ids(loaded)
    return loaded


def default_config_path() -> Path:
    """The config file used when --config is not given ($SNAPSHOT_AGENT_CONFIG overrides)."""
    return _variable_path() or DEFAULT_CONFIG_PATH


def _variable_path() -> Path | None:
    """The path $SNAPSHOT_AGENT_CONFIG names; an empty variable is the same as unset."""
    value = os.environ.get(CONFIG_VARIABLE, "")
    return Path(value) if value else None


def _source(path: Path | None, explicit: bool) -> _Source | None:
    """Who named `path`; None when there is nothing to read (no default file)."""
    if path is None:
        return None
    if explicit:
        return _Source(path, "--config")
    if path == _variable_path():
        return _Source(path, "variable")
    # A dangling symlink at the default path is a broken install, not "no config".
    return _Source(path, "default") if os.path.lexists(path) else None


# -- reading the file --------------------------------------------------------------


def _read(source: _Source) -> str:
    """Read at most MAX_CONFIG_BYTES of a regular file, with errors that say what to do."""
    if source.path == Path(os.devnull):
        return ""  # `--config /dev/null`: explicitly no config
    try:
        # O_NONBLOCK: a FIFO given by mistake is refused below instead of hanging here.
        fd = os.open(source.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"{source.label}: {_open_problem(source, exc)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory, " if stat.S_ISDIR(mode) else ""
            raise UsageError(f"{source.label}: {kind}not a regular file; pass a YAML file")
        data = _read_at_most(fd, MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{source.label}: cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"{source.label}: larger than 1 MiB; is this the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{source.label}: not UTF-8 text; is this the right file?") from None


def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to `limit` bytes from `fd`, however the reads are split."""
    chunks: list[bytes] = []
    left = limit
    while left > 0 and (chunk := os.read(fd, min(left, 65536))):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _open_problem(source: _Source, exc: OSError) -> str:
    """Why the file could not be opened, and what to do, in words."""
    if isinstance(exc, FileNotFoundError):
        fix = {
            "--config": "check the --config path",
            "variable": f"fix ${CONFIG_VARIABLE} or unset it to use {DEFAULT_CONFIG_PATH}",
            "default": "the path is a broken symlink; fix or remove it",
        }[source.named_by]
        return f"no such file; {fix}"
    if isinstance(exc, PermissionError):
        return "permission denied; run as a user who can read it"
    if isinstance(exc, NotADirectoryError):
        return "a part of the path is not a directory; check the path"
    return f"cannot open ({exc.strerror or exc})"


# -- YAML: bounded before anything is built from it -----------------------------------


#: libyaml when PyYAML has it: the pure-Python parser takes minutes on some 1 MiB files.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Refused(Exception):
    """A YAML shape the agent refuses, found at a node or an event."""

    def __init__(self, line: int, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.line, self.loc, self.message = line, loc, message


def _compose(source: _Source, text: str) -> yaml.Node | None:
    """The YAML node graph of `text`, refused when too deep, self-referring or too large."""
    try:
        _check_events(text)
        root = yaml.compose(text, Loader=_LOADER)
        if root is not None:
            _check_expansion(root)
    except yaml.YAMLError as exc:
        raise UsageError(_yaml_problem(source, exc)) from None
    except _Refused as refused:
        raise UsageError(
            _format_error(source.path, refused.line, refused.loc, refused.message, source)
        ) from None
    return root


def _construct(source: _Source, root: yaml.Node | None) -> object:
    """Python values from the checked node graph (safe tags only)."""
    if root is None:
        return None
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise UsageError(_yaml_problem(source, exc)) from None
    except Exception as exc:  # PyYAML's constructors fail in many ways on `!!int ""`
        raise UsageError(
            _one_line(
                f"{source.label}: not valid YAML (a tagged value cannot be read: "
                f"{type(exc).__name__}: {exc}); fix the value or drop its !!tag"
            )
        ) from None
    finally:
        loader.dispose()


def _yaml_problem(source: _Source, exc: yaml.YAMLError) -> str:
    """A parser or composer error as one line with its line number."""
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "nesting depth" in problem:  # libyaml's own bound (1000), met before ours can be
        return _one_line(f"{source.label}{where}: {_too_deep()}")
    return _one_line(f"{source.label}{where}: not valid YAML ({problem}); fix the syntax")


@dataclass
class _Open:
    """A mapping or list being parsed: what the next node inside it is (key, value, item)."""

    mapping: bool
    seen: int = 0  # nodes inside so far (keys and values alternate in a mapping)
    key: str | int = "?"

    def part(self) -> str | int:
        """The key path part of the node starting now."""
        return (self.key if self.seen % 2 else "?") if self.mapping else self.seen

    def close_child(self, scalar: str | None) -> None:
        """A node inside ended; a mapping key's text names the value that follows."""
        if self.mapping and self.seen % 2 == 0:
            self.key = scalar if scalar is not None else "?"
        self.seen += 1


def _check_events(text: str) -> None:
    """Refuse too deep a nesting or too many values, from the event stream alone.

    Parsing is a loop; composing and constructing recurse once per level and build
    every value: this runs first and stops at the first bound crossed.
    """
    stack: list[_Open] = []
    aliases = False
    for count, event in enumerate(yaml.parse(text, Loader=_LOADER)):
        aliases = aliases or isinstance(event, yaml.AliasEvent)
        if count > 2 * MAX_VALUES:  # every value is one event, a mapping or list two
            loc = tuple(o.part() for o in stack[:-1])  # the innermost open mapping or list
            raise _Refused(event.start_mark.line + 1, loc, _too_many(aliases))
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            if len(stack) >= MAX_DEPTH:
                loc = tuple(o.part() for o in stack)
                raise _Refused(event.start_mark.line + 1, loc, _too_deep())
            stack.append(_Open(isinstance(event, yaml.MappingStartEvent)))
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            stack.pop()
            if stack:
                stack[-1].close_child(None)
        elif isinstance(event, yaml.ScalarEvent | yaml.AliasEvent) and stack:
            stack[-1].close_child(event.value if isinstance(event, yaml.ScalarEvent) else None)


def _too_many(aliases: bool) -> str:
    if not aliases:
        return (
            f"more than {MAX_VALUES} values (a config needs a few hundred); is this the right file?"
        )
    return (
        f"more than {MAX_VALUES} values once aliases (*name) are expanded; "
        "write the values out instead of repeating anchors"
    )


def _too_deep() -> str:
    return (
        f"nested more than {MAX_DEPTH} levels deep (a config needs about five); "
        "is this the right file?"
    )


@dataclass(frozen=True)
class _Size:
    """A node's size with every alias expanded."""

    values: int
    text: int
    depth: int


def _check_expansion(root: yaml.Node) -> None:
    """Refuse aliases that refer to themselves or expand past the bounds; duplicate keys.

    Aliases make the node graph a DAG (or a cycle): sizes are computed once per node,
    bottom up, without recursion, and the first node over a bound is the one named.
    """
    sizes: dict[int, _Size] = {}
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not children_done:
            if id(node) in in_progress:
                raise _refused_at(root, node, _self_reference())
            in_progress.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        in_progress.discard(id(node))
        _refuse_duplicate_keys(root, node)
        size = _size_of(node, [sizes[id(c)] for c in children])
        if problem := _over_bounds(size):
            raise _refused_at(root, node, problem)
        sizes[id(node)] = size


def _children(node: yaml.Node) -> list[yaml.Node]:
    """The nodes directly inside a mapping (keys and values) or a list."""
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _size_of(node: yaml.Node, children: list[_Size]) -> _Size:
    """A node's expanded size from its children's."""
    if isinstance(node, yaml.ScalarNode):
        return _Size(1, len(node.value), 0)
    return _Size(
        1 + sum(c.values for c in children),
        sum(c.text for c in children),
        1 + max((c.depth for c in children), default=0),
    )


def _over_bounds(size: _Size) -> str | None:
    """What bound an expanded node crosses, in words; None when within them all."""
    if size.depth > MAX_DEPTH:
        return _too_deep()
    if size.values > MAX_VALUES:
        return _too_many(aliases=True)
    if size.text > MAX_EXPANDED_BYTES:
        return (
            "more than 1 MiB of text once aliases (*name) are expanded; "
            "write the values out instead of repeating anchors"
        )
    return None


def _self_reference() -> str:
    return "an alias (*name) refers to a value that contains it; a config cannot be infinite"


def _refuse_duplicate_keys(root: yaml.Node, node: yaml.Node) -> None:
    """Refuse a mapping that gives one key twice (YAML would keep the last silently)."""
    if not isinstance(node, yaml.MappingNode):
        return
    first: dict[str, yaml.Node] = {}
    for key, _value in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        if key.value in first:
            lines = f"lines {first[key.value].start_mark.line + 1} and {key.start_mark.line + 1}"
            raise _refused_at(root, key, f"given twice ({lines}); keep one")
        first[key.value] = key


def _refused_at(root: yaml.Node, node: yaml.Node, message: str) -> _Refused:
    """A refusal at `node`, with the key path of its first occurrence from the top."""
    return _Refused(node.start_mark.line + 1, _path_to(root, node), message)


def _path_to(root: yaml.Node, target: yaml.Node) -> tuple[str | int, ...]:
    """The key path of `target` (a key's path is its own name), found breadth first."""
    seen = {id(root)}
    queue: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(root, ())]
    for node, loc in queue:  # the queue grows while it is walked
        if node is target:
            return loc
        for part, child in _parts(node):
            if id(child) not in seen:
                seen.add(id(child))
                queue.append((child, (*loc, part)))
    return ()


def _parts(node: yaml.Node) -> Iterator[tuple[str | int, yaml.Node]]:
    """(key path part, child) for a mapping's keys and values and a list's items."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            yield name, key
            yield name, value
    elif isinstance(node, yaml.SequenceNode):
        yield from enumerate(node.value)


# -- converting to the typed config -------------------------------------------------


def _convert(source: _Source, root: yaml.Node | None, raw: dict[Any, Any]) -> Config:
    """The typed Config, or a one-line error naming the key, its line and the value."""
    try:
        return msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as exc:
        loc, message = _explain(str(exc), raw)
    got = _value_at(raw, loc)
    shown = not isinstance(got, dict | list) and got is not _MISSING
    quiet = "unknown key" in message or "key must be" in message or repr(got) in message
    if shown and not quiet:
        # "expected float, got str" -> "expected float, got str 'soon'"
        message += f" {got!r}" if re.search(r"got \w+$", message) else f" (got {got!r})"
    raise UsageError(_format_error(source.path, _line_of(root, loc), loc, message, source))


def _refuse_duplicate_ids(loaded: LoadedConfig) -> None:
    """Refuse two custom commands with the same id, naming both lines."""
    first: dict[str, int] = {}
    for index, spec in enumerate(loaded.config.checks.commands):
        if spec.id not in first:
            first[spec.id] = index
            continue
        lines = [loaded.line_of(("checks", "commands", i, "id")) for i in (first[spec.id], index)]
        raise loaded.error(
            ("checks", "commands", index, "id"),
            f"{spec.id!r} is declared twice in checks.commands (lines {lines[0]} and "
            f"{lines[1]}); give each command its own id",
        )


_ERROR_AT = re.compile(r"^(?P<message>.*?)(?: - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`)?$", re.S)
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[(\.\.\.)\]")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>[^`]*)`$")
_MISSING = object()


def _explain(error: str, raw: object) -> tuple[tuple[str | int, ...], str]:
    """msgspec's 'Expected `float` > 0.0 - at `$.checks.timeout_s`' -> (key path, plain words)."""
    match = _ERROR_AT.match(error.strip())
    message, path = (match["message"], match["path"] or "") if match else (error, "")
    parts: list[str | int | None] = []
    for key, index, unnamed in _PATH_PART.findall(path):
        parts.append(None if unnamed else int(index) if index else key)
    loc = _resolve(parts, raw)
    if unknown := _UNKNOWN.match(message):
        return (*loc, unknown["key"]), (
            "unknown key; remove it or check its spelling (see packaging/config.example.yaml)"
        )
    if match and match["key"]:
        return _bad_key(loc, raw)
    for regex, words in _PATTERN_WORDS.items():
        if f"matching regex {regex}" in message:
            return loc, f"expected {words}"
    # In YAML words: a list, not an "array"; a mapping, not an "object".
    message = message.replace("`", "").replace("array", "list").replace("object", "mapping")
    return loc, message[0].lower() + message[1:]


def _bad_key(loc: tuple[str | int, ...], raw: object) -> tuple[tuple[str | int, ...], str]:
    """A mapping key that is not text (YAML reads `3:`, `on:` and `no:` as int and bool)."""
    mapping = _value_at(raw, loc)
    keys = mapping if isinstance(mapping, dict) else {}
    bad = next((k for k in keys if not isinstance(k, str)), None)
    if bad is None:
        return loc, "a key must be text; quote it"
    why = " (YAML reads on/off/yes/no as true/false)" if isinstance(bad, bool) else ""
    return (*loc, str(bad)), f"a key must be text, not {type(bad).__name__}{why}; quote it"


def _resolve(parts: list[str | int | None], raw: object) -> tuple[str | int, ...]:
    """msgspec's path with dict keys it does not name (`[...]`) filled in from the values.

    msgspec checks a dict's entries in order and stops at the first bad one, so the
    unnamed key is the first entry whose value does not convert to the declared type.
    """
    loc: list[str | int] = []
    kind: Any = Config
    for part in parts:
        kind = _declared(kind)
        if part is None:
            if not isinstance(raw, dict) or typing.get_origin(kind) is not dict:
                break
            value_kind = typing.get_args(kind)[1]
            part = next((k for k, v in raw.items() if not _converts(v, value_kind)), None)
            if part is None:
                break
            kind = value_kind
        elif isinstance(part, int):
            kind = typing.get_args(kind)[0] if typing.get_origin(kind) is list else Any
        else:
            fields = msgspec.structs.fields(kind) if _is_struct(kind) else ()
            kind = next((f.type for f in fields if f.name == part), Any)
        loc.append(part)
        raw = _value_at(raw, (part,))
    return tuple(loc)


def _declared(kind: Any) -> Any:
    """The type under Annotated[...] and `X | None`."""
    while True:
        if typing.get_origin(kind) is Annotated:
            kind = typing.get_args(kind)[0]
        elif isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        else:
            return kind


def _is_struct(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, msgspec.Struct)


def _converts(value: object, kind: Any) -> bool:
    """Whether `value` converts to `kind` as the config's conversion would."""
    try:
        msgspec.convert(value, kind, strict=True)
    except msgspec.ValidationError:
        return False
    return True


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


# -- errors --------------------------------------------------------------------------


def _format_error(
    path: Path | None,
    line: int | None,
    loc: tuple[str | int, ...],
    message: str,
    source: _Source | None = None,
) -> str:
    """'config PATH line N: key.path: message', on one line whatever the input held."""
    where = source.label if source else f"config {path}" if path else "config"
    if line is not None:
        where += f" line {line}"
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    key = key or "(top level)"
    return _one_line(f"{where}: {key}: {message}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(text: str) -> str:
    """`text` with control characters and line breaks escaped (\\n, \\x1b), so it stays one line."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


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
