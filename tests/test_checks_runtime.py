"""runtime.versions and runtime.packages against fixture /proc trees and a fixture dpkg db."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import snapshot_agent
from snapshot_agent.checks.runtime import (
    parse_package_list,
    parse_version,
    relevant,
    runtime_packages,
    runtime_versions,
)
from snapshot_agent.core.results import Severity, Status
from snapshot_agent.node.processes import find_brokers

from .conftest import fixture_roots, make_context, write_tree


def fake_binary(path: Path, output: str) -> Path:
    """An executable that prints `output` like `<tool> --version` does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{output}'\n")
    path.chmod(0o755)
    return path


def broker_proc(node: Path, pid: int, exe: Path | str, comm: str = "iggy-server") -> None:
    """A fixture /proc/PID for a running broker."""
    write_tree(node, {f"proc/{pid}/comm": comm + "\n", f"proc/{pid}/cmdline": f"{exe}\0"})
    (node / f"proc/{pid}/exe").symlink_to(exe)
    (node / f"proc/{pid}/cwd").symlink_to("/srv/iggy")


def test_parse_version_samples() -> None:
    assert parse_version("iggy-server 0.6.1\n") == "0.6.1"
    assert parse_version("iggy-connectors 0.1.0-edge.2\n") == "0.1.0-edge.2"
    assert parse_version("Iggy CLI v0.9.0") == "0.9.0"
    assert parse_version("no version here") == ""


def test_find_brokers_by_comm_or_argv0(tmp_path: Path, node: Path) -> None:
    broker_proc(node, 812, "/usr/bin/iggy-server")
    # A main thread renamed to its shard: found by argv[0].
    broker_proc(node, 900, "/opt/iggy/iggy-server", comm="shard-0")
    write_tree(node, {"proc/1/comm": "systemd\n", "proc/1/cmdline": "/sbin/init\0"})
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    procs = find_brokers(ctx)
    assert [(p.pid, p.exe, p.cwd) for p in procs] == [
        (812, "/usr/bin/iggy-server", "/srv/iggy"),
        (900, "/opt/iggy/iggy-server", "/srv/iggy"),
    ]


def test_runtime_versions_running_broker_and_path(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = fake_binary(tmp_path / "old/iggy-server", "iggy-server 0.6.1")
    broker_proc(node, 812, running)
    fake_binary(tmp_path / "bin/iggy-server", "iggy-server 0.7.0")
    fake_binary(tmp_path / "bin/iggy-connectors", "iggy-connectors 0.1.0")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    result = runtime_versions.run(ctx)
    assert result.status == Status.PASS
    versions = {v["component"]: v["version"] for v in result.data["versions"]}
    assert versions["snapshot-agent"] == snapshot_agent.__version__
    assert versions["iggy-server (running)"] == "0.6.1"
    assert versions["iggy-server (on PATH)"] == "0.7.0"
    assert versions["iggy-connectors"] == "0.1.0"
    assert versions["iggy"] == ""
    assert "not found: iggy" in result.summary
    [finding] = result.findings
    assert finding.severity == Severity.INFO
    assert "running broker is 0.6.1 but iggy-server on PATH is 0.7.0" in finding.message


def test_runtime_versions_binary_replaced_under_the_broker(tmp_path: Path, node: Path) -> None:
    # The kernel shows a replaced binary as "<path> (deleted)"; exec through
    # /proc/PID/exe still reaches the old file.
    old = fake_binary(tmp_path / "usr/bin/iggy-server (deleted)", "iggy-server 0.6.0")
    broker_proc(node, 812, old)
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    result = runtime_versions.run(ctx)
    assert result.data["broker_processes"] == [
        {"pid": 812, "exe": str(tmp_path / "usr/bin/iggy-server"), "exe_deleted": True}
    ]
    assert any("replaced or deleted on disk" in f.message for f in result.findings)
    # The node does not run what is installed: an upgrade waits for a restart.
    assert result.status == Status.WARN
    assert "systemctl restart iggy-server" in result.findings[0].remediation


def test_runtime_versions_run_binaries_in_a_start_proof_environment(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old build that ignores --version would start: point it at nothing usable."""
    record = tmp_path / "env.txt"
    script = tmp_path / "bin/iggy-connectors"
    script.parent.mkdir(parents=True)
    script.write_text(
        f"#!/bin/sh\nenv > '{record}'\npwd >> '{record}'\necho 'iggy-connectors 0.1.0'\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    monkeypatch.setenv("IGGY_SYSTEM_PATH", "/var/lib/iggy")  # the agent's own env must not leak
    result = runtime_versions.run(make_context(tmp_path, roots=fixture_roots(node)))
    versions = {v["component"]: v["version"] for v in result.data["versions"]}
    assert versions["iggy-connectors"] == "0.1.0"
    env = dict(line.split("=", 1) for line in record.read_text().splitlines() if "=" in line)
    assert env["IGGY_CONFIG_PATH"] == "/nonexistent/server.toml"
    assert env["IGGY_CONNECTORS_CONFIG_PATH"] == "/nonexistent/connectors.toml"
    # Not creatable even by root: nothing can be made under /dev/null.
    assert env["IGGY_SYSTEM_PATH"] == "/dev/null/nonexistent"
    assert env["IGGY_CONNECTORS_STATE_PATH"] == "/dev/null/nonexistent"
    assert record.read_text().splitlines()[-1] == "/"  # and nothing local to pick up


def test_runtime_versions_without_broker(tmp_path: Path, node: Path) -> None:
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    result = runtime_versions.run(ctx)
    assert result.status == Status.PASS
    notes = {v["component"]: v["note"] for v in result.data["versions"]}
    if shutil.which("iggy-server") is None:
        assert "no iggy-server process is running" in notes["iggy-server"]


# -- runtime.packages ---------------------------------------------------------------


def dpkg_status(*stanzas: tuple[str, str, str]) -> str:
    """A /var/lib/dpkg/status with (package, version, status) stanzas."""
    return "".join(
        f"Package: {name}\nStatus: {status}\nPriority: optional\nSection: libs\n"
        f"Maintainer: Debian <debian@example.org>\nArchitecture: amd64\n"
        f"Version: {version}\nDescription: {name}\n\n"
        for name, version, status in stanzas
    )


HEALTHY = (
    ("openssl", "3.0.19-1~deb12u2", "install ok installed"),
    ("libc6", "2.36-9+deb12u14", "install ok installed"),
    ("linux-image-6.1.0-18-amd64", "6.1.76-1", "install ok installed"),
    ("libssl3", "3.0.19-1~deb12u2", "install ok installed"),
    ("tzdata", "2025b-0+deb12u2", "install ok installed"),
    ("oldthing", "1.0", "deinstall ok config-files"),
)

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg-query")


@needs_dpkg
def test_runtime_packages_pass(tmp_path: Path, node: Path) -> None:
    write_tree(node, {"var/lib/dpkg/status": dpkg_status(*HEALTHY)})
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    result = runtime_packages.run(ctx)
    assert result.status == Status.PASS
    assert result.summary == "5 packages (dpkg); openssl 3.0.19-1~deb12u2, libc6 2.36-9+deb12u14"
    names = [r["package"] for r in result.data["relevant"]]
    assert names == ["libc6", "libssl3", "linux-image-6.1.0-18-amd64", "openssl"]
    assert "tzdata\t2025b-0+deb12u2" in (tmp_path / "artifacts/packages.txt").read_text()


@needs_dpkg
def test_runtime_packages_warns_on_half_configured(tmp_path: Path, node: Path) -> None:
    broken = ("libssl3", "3.0.19-1~deb12u2", "install ok half-configured")
    write_tree(
        node,
        {
            "var/lib/dpkg/status": dpkg_status(*HEALTHY[:3], broken),
            "run/reboot-required": "*** System restart required ***\n",
            "run/reboot-required.pkgs": "linux-image-6.1.0-18-amd64\nlibssl3\n",
        },
    )
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    result = runtime_packages.run(ctx)
    assert result.status == Status.WARN
    assert result.summary.startswith("1 package(s) are in a broken state: libssl3")
    assert "dpkg --configure -a" in result.findings[0].remediation
    assert result.data["broken"][0]["status"] == "install ok half-configured"
    reboot = [f for f in result.findings if f.severity == Severity.INFO]
    assert reboot and "libssl3, linux-image-6.1.0-18-amd64" in reboot[0].message


@needs_dpkg
def test_runtime_packages_pending_reboot_and_held_package_pass(tmp_path: Path, node: Path) -> None:
    held = ("iggy-server", "0.6.1-1", "hold ok installed")
    write_tree(
        node,
        {
            "var/lib/dpkg/status": dpkg_status(*HEALTHY, held),
            "run/reboot-required": "*** System restart required ***\n",
            "run/reboot-required.pkgs": "linux-image-6.1.0-18-amd64\n",
        },
    )
    result = runtime_packages.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.PASS
    assert result.summary.endswith("libc6 2.36-9+deb12u14, iggy-server 0.6.1-1")
    [reboot] = result.findings
    assert reboot.severity == Severity.INFO and "reboot is pending" in reboot.message


@needs_dpkg
def test_runtime_packages_skips_on_a_corrupt_database(tmp_path: Path, node: Path) -> None:
    write_tree(node, {"var/lib/dpkg/status": "garbage\n"})
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    result = runtime_packages.run(ctx)
    assert result.status == Status.SKIPPED
    assert "exited 2" in result.summary and "parsing file" in result.summary


def test_parse_package_list_sample() -> None:
    text = (
        "libc6\t2.36-9+deb12u14\tinstall ok installed\tamd64\n"
        "iggy-server\t0.6.1-1\thold ok installed\tamd64\n"
        "nvme-cli\t2.4+really2.3-3\tinstall reinst-required half-installed\tamd64\n"
        "garbage line\n"
    )
    packages = parse_package_list(text)
    assert [p.name for p in packages] == ["libc6", "iggy-server", "nvme-cli"]
    assert [p.broken for p in packages] == [False, False, True]
    assert [p.name for p in relevant(packages)] == ["libc6", "iggy-server", "nvme-cli"]
