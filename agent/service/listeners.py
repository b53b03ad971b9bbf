"""Where the API listens: the Unix socket (0660, its directory 0750) and, optionally, TCP
with mutual TLS only; and how many connections each lets in.

The socket's file permissions are its authentication, so it is bound, given its mode
(and group), and only then listened on: nobody connects before the mode is right. A
socket file left by a server that died is removed; one that a live server answers on is
refused. On TCP the TLS context requires a client certificate signed by the client CA:
without one the handshake fails before HTTP is spoken.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import socket
import ssl
import stat
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from snapshot_agent.config import ApiConfig, LoadedConfig

SOCKET_MODE = 0o660
SOCKET_DIR_MODE = 0o750
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with its NUL
PROBE_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 128  # per listener: beyond it, a new connection gets a 503 and is closed
#: Per peer (a uid on the Unix socket, an address on TCP): a client that holds this many
#: (slowloris, a leak) is turned away alone, and the others still get in.
MAX_PER_PEER = 64
_UCRED = struct.Struct("3i")  # struct ucred (SO_PEERCRED): pid, uid, gid
LINGER_S = 2.0  # a turned-away client has this long to send its request and read the 503
MAX_LINGERING = 128  # past this many turned-away connections lingering, close at once
BACKLOG = 128
HANDSHAKE_TIMEOUT_S = 10.0
_BUSY_BODY = json.dumps(
    {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "too many connections; try again in a moment",
    }
).encode()
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
    b"Connection: close\r\nRetry-After: 5\r\n"
    + f"Content-Length: {len(_BUSY_BODY)}\r\n\r\n".encode()
    + _BUSY_BODY
)


@dataclass(frozen=True)
class UnixListener:
    """A bound Unix socket, ready to be listened on, and the file it is."""

    sock: socket.socket
    path: Path
    inode: int

    def remove(self) -> None:
        """Remove the socket file if it is still ours (not a newer server's)."""
        with contextlib.suppress(OSError):
            if os.lstat(self.path).st_ino == self.inode:
                self.path.unlink()


def bind_unix(loaded: LoadedConfig) -> UnixListener:
    """Bind api.unix_socket with mode 0660 (group api.group when the config has one)."""
    api = loaded.config.api
    path = Path(api.unix_socket)
    where = ("api", "unix_socket")
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise loaded.error(
            where, f"{path}: longer than {MAX_SOCKET_PATH} bytes, too long for a Unix socket"
        )
    made = _socket_directory(loaded, path.parent)
    _clear_stale(loaded, path)
    gid = _group(loaded, api)
    if gid is not None:
        _directory_group(loaded, path.parent, made, gid)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(str(path))
        # Not listening yet: nobody can connect while the umask's mode is on it.
        os.chmod(path, SOCKET_MODE)
        if gid is not None:
            os.chown(path, -1, gid)
        inode = os.lstat(path).st_ino
    except OSError as exc:
        sock.close()
        raise loaded.error(where, f"{path}: cannot bind it ({exc.strerror or exc})") from None
    return UnixListener(sock, path, inode)


def _directory_group(loaded: LoadedConfig, directory: Path, made: bool, gid: int) -> None:
    """Let api.group's members through the socket's directory.

    A directory anyone may pass through (/run, /tmp) needs nothing. One that keeps others
    out is given to the group only when it is the socket's own: made by this start, or
    the unit's RuntimeDirectory ($RUNTIME_DIRECTORY); any other (a home, a state
    directory) is never changed, and serve says what to do. Without CAP_CHOWN a process
    can only give a file to a group it is in: under the unit, SupplementaryGroups=.
    """
    try:
        st = os.stat(directory)
    except OSError:
        return  # binding says why
    if st.st_mode & stat.S_IXOTH or (st.st_gid == gid and st.st_mode & stat.S_IXGRP):
        return
    own = made or _runtime_directory() == directory.resolve()
    if not own or st.st_uid != os.geteuid():
        raise loaded.error(
            ("api", "group"),
            f"members of group {gid} cannot reach the socket: its directory {directory} keeps "
            "them out; give the directory to that group (chgrp) or put the socket in a "
            "directory of its own",
        )
    try:
        os.chown(directory, -1, gid)
    except OSError as exc:
        raise loaded.error(
            ("api", "group"),
            f"cannot give {directory} and its socket to group {gid} ({exc.strerror or exc}); "
            "the agent's user must be a member of it (in the unit: SupplementaryGroups=)",
        ) from None


def _runtime_directory() -> Path | None:
    """The unit's RuntimeDirectory, as systemd tells the service ($RUNTIME_DIRECTORY)."""
    value = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(value).resolve() if value else None


def _socket_directory(loaded: LoadedConfig, directory: Path) -> bool:
    """Create the socket's directory 0750 if missing (systemd's RuntimeDirectory makes it);
    whether it was made here."""
    if directory.is_dir():
        return False
    try:
        directory.mkdir(mode=SOCKET_DIR_MODE, parents=True)
        os.chmod(directory, SOCKET_DIR_MODE)  # exactly, whatever the umask
    except FileExistsError:
        if directory.is_dir():
            return False  # made meanwhile by another server: not ours to give a group
        raise loaded.error(
            ("api", "unix_socket"), f"{directory} is not a directory; choose another path"
        ) from None
    except OSError as exc:
        raise loaded.error(
            ("api", "unix_socket"),
            f"cannot create its directory {directory} ({exc.strerror or exc}); create it "
            "or choose another path",
        ) from None
    return True


def _clear_stale(loaded: LoadedConfig, path: Path) -> None:
    """Remove a socket file nobody listens on; refuse one a live server answers on."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise loaded.error(("api", "unix_socket"), f"{path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise loaded.error(
            ("api", "unix_socket"),
            f"{path} exists and is not a socket; remove it or choose another path",
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as probe:
        probe.settimeout(PROBE_TIMEOUT_S)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # a dead server's
            return
        except OSError:
            pass  # it exists but does not answer as it should: someone may be on it
    raise loaded.error(
        ("api", "unix_socket"),
        f"{path}: another server is listening there; stop it first "
        "(systemctl stop snapshot-agent) or choose another path",
    )


def _group(loaded: LoadedConfig, api: ApiConfig) -> int | None:
    """The gid of `api.group` (a name or a number), or None to keep the process's group."""
    group = api.group
    if group is None:
        return None
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise loaded.error(
            ("api", "group"), f"no group named {group!r} on this host; create it or fix the key"
        ) from None


@dataclass(frozen=True)
class Endpoint:
    """api.listen, parsed: a host (IPv4, IPv6 or a name) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def tcp_endpoint(loaded: LoadedConfig) -> Endpoint | None:
    """api.listen as host and port, or None when the API is on the Unix socket only."""
    text = loaded.config.api.listen
    if text is None:
        return None
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise loaded.error(
            ("api", "listen"), f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:7443 or [::1]:7443"
        )
    return Endpoint(host, int(port))


def tls_context(loaded: LoadedConfig) -> ssl.SSLContext:
    """A server context that requires a client certificate signed by api.tls.client_ca."""
    tls = loaded.config.api.tls
    missing = [k for k in ("cert", "key", "client_ca") if getattr(tls, k) is None]
    if missing:
        raise loaded.error(
            ("api", "tls"),
            f"api.listen needs mutual TLS: set api.tls.{', api.tls.'.join(missing)} (the "
            "server's certificate and key, and the CA that signs the clients' certificates)",
        )
    assert tls.cert and tls.key and tls.client_ca
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    for key, load in (
        ("cert", lambda: context.load_cert_chain(tls.cert, tls.key)),  # type: ignore[arg-type]
        ("client_ca", lambda: context.load_verify_locations(cafile=tls.client_ca)),
    ):
        try:
            load()
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise loaded.error(
                ("api", "tls", key),
                f"cannot load {getattr(tls, key)}"
                + (f" with key {tls.key}" if key == "cert" else "")
                + f" ({reason}); give PEM files the agent's user can read",
            ) from None
    return context


class Gate:
    """At most `limit` connections at once on one listener, `per_peer` from one peer."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        limit: int = MAX_CONNECTIONS,
        per_peer: int = MAX_PER_PEER,
    ):
        self.factory = factory
        self.limit = limit
        self.per_peer = per_peer
        self.live = 0
        self.peers: Counter[object] = Counter()
        self.lingering = 0

    def admit(self, peer: object) -> bool:
        """Count a new connection from `peer` in, if there is room for it."""
        if self.live >= self.limit or self.peers[peer] >= self.per_peer:
            return False
        self.live += 1
        self.peers[peer] += 1
        return True

    def release(self, peer: object) -> None:
        """An admitted connection from `peer` ended."""
        self.live -= 1
        self.peers[peer] -= 1
        if self.peers[peer] <= 0:
            del self.peers[peer]

    def __call__(self) -> asyncio.Protocol:
        return _Counted(self)


class _Counted(asyncio.Protocol):
    """A connection counted against its gate, handed on to the HTTP protocol once let in.

    One past the limit is answered 503 and closed the way HTTP servers close ("lingering
    close"): the answer is written and the write side shut, then what the client sends is
    read and dropped for up to LINGER_S before the socket is closed. Closing at once
    would make the client's request fail with EPIPE (or, on TCP, a reset that can
    discard the 503) before it ever reads why it was turned away.
    """

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.inner: asyncio.Protocol | None = None
        self.turned_away: asyncio.BaseTransport | None = None
        self._linger: asyncio.TimerHandle | None = None
        self.peer: object = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer = peer_of(transport)
        if not self.gate.admit(self.peer):
            self._turn_away(transport)
            return
        self.inner = self.gate.factory()
        self.inner.connection_made(transport)

    def _turn_away(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(BUSY_RESPONSE)
        if self.gate.lingering >= MAX_LINGERING:
            transport.close()
            return
        if transport.can_write_eof():  # not over TLS: there the close says it all
            transport.write_eof()
        self.gate.lingering += 1
        self.turned_away = transport
        self._linger = asyncio.get_running_loop().call_later(LINGER_S, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.turned_away is not None:
            self.turned_away = None
            self.gate.lingering -= 1
            if self._linger is not None:
                self._linger.cancel()  # a client that left early frees its timer too
                self._linger = None
        inner, self.inner = self.inner, None
        if inner is not None:
            self.gate.release(self.peer)
            inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.turned_away is not None:
            self.turned_away.close()  # the client is done sending: nothing to linger for
            return None
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


def peer_of(transport: asyncio.BaseTransport) -> object:
    """Who is connecting: ("uid", N) on a Unix socket (its peer credentials), ("ip", A)
    on TCP; None when the kernel does not say (all such share one count)."""
    peername = transport.get_extra_info("peername")
    if isinstance(peername, tuple) and peername:
        return ("ip", peername[0])
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        with contextlib.suppress(OSError):
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            return ("uid", _UCRED.unpack(creds)[1])
    return None
