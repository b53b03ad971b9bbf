"""Where the Iggy broker lives on this node: its process, config, data and log directories.

`discover(ctx)` answers once for every Iggy-aware check, in this order of trust:
1. the agent's config (`iggy.config_path`, `iggy.data_dir`, `iggy.logs_dir`) overrides;
2. the running broker (the systemd unit's MainPID, else a process named iggy-server):
   its working directory, its `IGGY_*` environment (/proc/PID/environ, then the `.env`
   Iggy loads from its working directory or `IGGY_ENV_PATH`), its `IGGY_CONFIG_PATH`;
3. Iggy's defaults: `core/server/config.toml` (0.7+) or `configs/server.toml` (0.4-0.6)
   relative to the broker's working directory, the packaged locations, `system.path`
   (default `local_data`) against the working directory, `[system.logging] path`
   (default `logs`) against the data directory, the official image's /app/local_data.
A broker in a container sees its own mount namespace: a path that exists only under
/proc/PID/root is reached through it. Environment values are secrets-prone: callers
never print them (the pipeline's filter redacts what reaches the archive anyway).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.context import Context
from snapshot_agent.node.iggy_config import (
    CANDIDATES,
    DEFAULT_RELATIVE,
    IggyConfig,
    apply_env_overrides,
    read_iggy_config,
)
from snapshot_agent.node.mounts import probe_all, probe_budget
from snapshot_agent.node.processes import BrokerProcess, find_broker

MAX_ENVIRON_BYTES = 256 * 1024
MAX_DOTENV_BYTES = 64 * 1024
DEFAULT_SYSTEM_PATH = "local_data"  # server-0.8.0:core/server/config.toml [system] path
DEFAULT_LOGGING_PATH = "logs"  # [system.logging] path, relative to system.path
IMAGE_DATA_DIR = "/app/local_data"  # the official container image's working directory


@dataclass
class IggyInstall:
    """The broker and its files as found on this node, with how each was found."""

    broker: BrokerProcess | None
    env: dict[str, str]
    config: IggyConfig
    config_source: str
    data_dir: str
    data_dir_source: str
    logs_dir: str
    logs_dir_source: str
    unit: str
    looked_for: list[str] = field(default_factory=list)
    data_dir_state: str = "unknown"  # exists | missing | hung | unknown (none to look at)

    @property
    def found(self) -> bool:
        """True when a broker runs, or its config or data directory is on the node."""
        has_data = self.data_dir_state in ("exists", "hung")
        return self.broker is not None or self.config.path is not None or has_data

    def searched(self) -> str:
        """'looked for ...; ...' and which settings point the agent at a broker it missed."""
        return (
            "looked for "
            + "; ".join(self.looked_for)
            + ". If Iggy runs here, set iggy.config_path and iggy.data_dir in the agent config"
        )

    def skip_reason(self) -> str:
        """Why the Iggy checks have nothing to look at, naming what was searched."""
        return "no Iggy broker found on this node: " + self.searched()

    def setting(self, dotted: str, default: Any = None) -> Any:
        """A config value by dotted key ("http.address"), IGGY_* overrides applied."""
        return self.config.setting(dotted, default)

    def describe(self) -> dict[str, Any]:
        """Where everything was found, for a check's data (no environment values)."""
        return {
            "pid": self.broker.pid if self.broker else None,
            "found_by": self.broker.found_by if self.broker else "",
            "cwd": self.broker.cwd if self.broker else "",
            "unit": self.unit,
            "config_path": str(self.config.path) if self.config.path else None,
            "config_source": self.config_source,
            "config_problem": self.config.problem or None,
            "overrides": dict(self.config.overrides),
            "data_dir": self.data_dir or None,
            "data_dir_source": self.data_dir_source,
            "data_dir_state": self.data_dir_state,
            "logs_dir": self.logs_dir or None,
            "logs_dir_source": self.logs_dir_source,
        }


class _Finder:
    """Resolves the broker's paths on the node: through its own root when it has one.

    A broker in a container (its /proc/PID/root is not ours) sees its own files: its
    paths are read through /proc/PID/root first, so a host file that happens to sit at
    the same path (a host /etc/iggy/server.toml) is never taken for the broker's.
    """

    def __init__(self, ctx: Context, broker: BrokerProcess | None) -> None:
        self.ctx = ctx
        self.broker = broker
        self.contained = broker is not None and _own_root(ctx, broker.pid)

    def absolute(self, path: str) -> str:
        """A path made absolute against the broker's cwd, normalised."""
        base = (self.broker.cwd if self.broker else "") or "/"
        return posixpath.normpath(posixpath.join(base, path))

    def inside(self, path: str) -> str:
        """The node path of a path as the broker sees it."""
        return f"/proc/{self.broker.pid}/root{path}" if self.contained and self.broker else path

    def reach(self, path: str, want_dir: bool) -> tuple[str, bool]:
        """The node path to read the broker's `path` through, and whether it exists."""
        node_path = self.inside(path)
        mapped = self.ctx.path(node_path)
        return node_path, mapped.is_dir() if want_dir else mapped.is_file()


def _own_root(ctx: Context, pid: int) -> bool:
    """True when the process has a root directory of its own (a container)."""
    try:
        return not os.path.samefile(ctx.path(f"/proc/{pid}/root"), ctx.path("/"))
    except OSError:  # not ours to read (not root), or gone: take it as the host's
        return False


def discover(ctx: Context, *, directories: bool = True) -> IggyInstall:
    """The broker, its config (overrides applied), data and log directories, or what was tried.

    `directories` False leaves out the data and log directories (and the timed look at
    them): for callers that need only the broker and its config, such as the ports.
    """
    iggy = ctx.config.iggy
    broker = find_broker(ctx)
    finder = _Finder(ctx, broker)
    looked = [f"a process named iggy-server or the MainPID of {iggy.service}: none runs"]
    if broker is not None:
        looked = [f"iggy-server pid {broker.pid} ({broker.found_by})"]
    env = _broker_env(ctx, finder)
    config, config_source = _config(ctx, finder, env, looked)
    apply_env_overrides(config, env)
    install = IggyInstall(broker, env, config, config_source, "", "", "", "", iggy.service, looked)
    if directories:
        _data_dir(finder, install)
        _logs_dir(finder, install)
    return install


def _broker_env(ctx: Context, finder: _Finder) -> dict[str, str]:
    """The broker's IGGY_* variables: its .env file under its own environment."""
    broker = finder.broker
    if broker is None:
        return {}
    raw = ctx.read_optional(f"/proc/{broker.pid}/environ", max_bytes=MAX_ENVIRON_BYTES) or ""
    env = _iggy_pairs(raw.split("\0"))
    dotenv = env.get("IGGY_ENV_PATH") or ".env"
    path, exists = finder.reach(finder.absolute(dotenv), want_dir=False)
    if exists:
        text = ctx.read_optional(path, max_bytes=MAX_DOTENV_BYTES) or ""
        # dotenvy does not replace variables the process already has.
        return {**_iggy_pairs(_dotenv_lines(text)), **env}
    return env


def _iggy_pairs(items: list[str]) -> dict[str, str]:
    """NAME=value items whose name starts with IGGY_."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if sep and name.startswith("IGGY_"):
            out[name] = value
    return out


def _dotenv_lines(text: str) -> list[str]:
    """A .env file's assignments as NAME=value (export prefixes and quotes removed)."""
    out = []
    for line in text.splitlines():
        line = line.strip().removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if not sep or line.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out.append(f"{name.strip()}={value}")
    return out


def _config(
    ctx: Context, finder: _Finder, env: dict[str, str], looked: list[str]
) -> tuple[IggyConfig, str]:
    """The server config: configured, IGGY_CONFIG_PATH, the defaults, the usual places."""
    configured = ctx.config.iggy.config_path
    if configured:
        return read_iggy_config(ctx, configured), "config iggy.config_path"
    tried: list[str] = []
    candidates: list[tuple[str, str]] = []
    pid = finder.broker.pid if finder.broker else 0
    if env.get("IGGY_CONFIG_PATH"):
        candidates.append((env["IGGY_CONFIG_PATH"], f"IGGY_CONFIG_PATH of pid {pid}"))
    if finder.broker is not None and finder.broker.cwd:
        source = f"Iggy's default relative to the working directory of pid {pid}"
        candidates += [(rel, source) for rel in DEFAULT_RELATIVE]
    candidates += [(path, "a usual location") for path in CANDIDATES]
    for path, source in candidates:
        node_path, exists = finder.reach(finder.absolute(path), want_dir=False)
        tried.append(node_path)
        if exists:
            return read_iggy_config(ctx, node_path), source
    looked.append("a server config at " + ", ".join(tried))
    return IggyConfig(None), ""


def _data_dir(finder: _Finder, install: IggyInstall) -> None:
    """system.path against the broker's cwd (IGGY_SYSTEM_PATH applied), or the configured one.

    The directory is looked at under a timeout: a hung mount is recorded, never waited on.
    """
    configured = finder.ctx.config.iggy.data_dir
    system_path = install.setting("system.path")
    if configured:
        path, source = configured, "config iggy.data_dir"
    elif isinstance(system_path, str) and system_path:
        how = install.config.overrides.get("system.path") or (
            f"[system] path of {install.config.path}"
            if install.config.path
            else "Iggy's default system.path"
        )
        if not system_path.startswith("/") and finder.broker is None:
            _relative_without_broker(finder, install, system_path, how)
            return
        path = finder.absolute(system_path)
        source = how + _relative_note(system_path, finder)
    elif finder.broker is not None and finder.broker.cwd:
        path = finder.absolute(DEFAULT_SYSTEM_PATH)
        pid = finder.broker.pid
        source = f"Iggy's default {DEFAULT_SYSTEM_PATH} in the working directory of pid {pid}"
    else:
        path, source = IMAGE_DATA_DIR, "the official container image's default"
    state, reached = _look(finder, path, brokers=not configured)
    if reached != path:
        source += ", inside its container"
    if state != "exists" and source.startswith("the official"):
        install.looked_for.append(f"a data directory at {IMAGE_DATA_DIR}")
        return
    install.data_dir, install.data_dir_source, install.data_dir_state = reached, source, state
    if state == "hung":
        install.looked_for.append(f"a data directory at {reached} (its filesystem does not answer)")
    elif state == "missing":
        install.looked_for.append(f"a data directory at {reached}")


def _look(finder: _Finder, path: str, brokers: bool = True) -> tuple[str, str]:
    """('exists' | 'missing' | 'hung', node path) of a directory: the broker's own path
    (through its root), or with `brokers` False a node path from the agent's config."""
    node_path = finder.inside(path) if brokers else path
    budget = probe_budget(finder.ctx, 2.0)
    probe = probe_all({"dir": lambda: finder.ctx.path(node_path).is_dir()}, budget)["dir"]
    if not probe.done:
        return "hung", node_path
    return ("exists" if probe.value else "missing"), node_path  # unreadable: missing


def _relative_without_broker(
    finder: _Finder, install: IggyInstall, system_path: str, how: str
) -> None:
    """A relative system.path and no broker: try it beside the config, as a source tree has it."""
    config = install.config.path
    bases = [config.parent, *config.parent.parents[:2]] if config else []
    for base in bases:
        path = posixpath.normpath(posixpath.join(str(base), system_path))
        state, reached = _look(finder, path)
        if state == "exists":
            install.data_dir, install.data_dir_state = reached, state
            install.data_dir_source = f"{how}, relative; found beside the config (no broker runs)"
            return
    install.looked_for.append(
        f"a data directory: system.path {system_path!r} is relative to the broker's working "
        "directory, and no broker runs to tell it"
    )


def _relative_note(path: str, finder: _Finder) -> str:
    """', relative to the broker's working directory' when the path is relative."""
    if path.startswith("/") or finder.broker is None:
        return ""
    return f", relative to the working directory of pid {finder.broker.pid}"


def _logs_dir(finder: _Finder, install: IggyInstall) -> None:
    """[system.logging] path against the data dir, or the configured log directory."""
    configured = finder.ctx.config.iggy.logs_dir
    if configured:  # a node path, like every path in the agent's config
        install.logs_dir, install.logs_dir_source = configured, "config iggy.logs_dir"
        return
    if not install.data_dir:
        return
    logging = install.setting("system.logging.path")
    rel = logging if isinstance(logging, str) and logging else DEFAULT_LOGGING_PATH
    if rel.startswith("/"):  # an absolute path is the broker's own, maybe in its container
        path, source = finder.inside(posixpath.normpath(rel)), "[system.logging] path"
    else:
        path = posixpath.normpath(posixpath.join(install.data_dir, rel))
        source = f"{rel} under the data directory (from {install.data_dir_source})"
    install.logs_dir, install.logs_dir_source = path, source
    if install.data_dir_state == "exists" and _look(finder, path, brokers=False)[0] != "exists":
        install.looked_for.append(f"a log directory at {path}")
