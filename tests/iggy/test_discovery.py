"""Discovery on fixture nodes: the broker, its config (IGGY_* applied), data and log dirs."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapshot_agent.config import ChecksConfig, Config
from snapshot_agent.node.iggy_config import IggyConfig as ServerConfig
from snapshot_agent.node.iggy_config import apply_env_overrides, env_value, key_path
from snapshot_agent.node.iggy_install import IggyInstall, discover
from snapshot_agent.node.ports import read_broker_ports
from tests.conftest import fixture_roots, make_context, write_tree
from tests.iggy.procs import PID, iggy_context
from tests.iggy.procs import fake_broker as broker

CONFIG_08 = """
[http]
enabled = true
address = "127.0.0.1:3000"

[http.jwt]
access_token_expiry = "1 h"

[tcp]
enabled = true
address = "127.0.0.1:8090"

[system]
path = "local_data"

[system.logging]
path = "logs"
"""


def find(tmp_path: Path, node: Path, **iggy: str) -> IggyInstall:
    """discover() on the fixture node with the given agent `iggy:` settings."""
    return discover(iggy_context(tmp_path, node, **iggy))


def test_nothing_found_says_what_was_looked_for(tmp_path: Path, node: Path) -> None:
    install = find(tmp_path, node)
    assert not install.found and install.broker is None and install.config.path is None
    reason = install.skip_reason()
    assert reason.startswith("no Iggy broker found on this node: looked for")
    assert "iggy-server" in reason and "/etc/iggy/server.toml" in reason
    assert "/app/local_data" in reason


@pytest.mark.parametrize(
    ("relative", "version"),
    [("core/server/config.toml", "0.7+"), ("configs/server.toml", "0.4-0.6")],
)
def test_config_found_relative_to_the_broker_cwd(
    tmp_path: Path, node: Path, relative: str, version: str
) -> None:
    broker(node, "/srv/iggy")
    write_tree(node, {f"srv/iggy/{relative}": CONFIG_08, "srv/iggy/local_data/logs/x": ""})
    install = find(tmp_path, node)
    assert install.found and install.broker is not None and install.broker.pid == PID
    assert str(install.config.path) == f"/srv/iggy/{relative}", version
    assert "working directory of pid 4242" in install.config_source
    assert install.data_dir == "/srv/iggy/local_data" and install.data_dir_state == "exists"
    assert install.logs_dir == "/srv/iggy/local_data/logs"
    assert install.setting("http.address") == "127.0.0.1:3000"


def test_iggy_config_path_and_env_overrides(tmp_path: Path, node: Path) -> None:
    env = {
        "IGGY_CONFIG_PATH": "conf/server.toml",  # relative to the cwd
        "IGGY_SYSTEM_PATH": "/data/iggy",
        "IGGY_HTTP_JWT_ENCODING_SECRET": "s3cr3t-from-env",
        "IGGY_TCP_ADDRESS": "0.0.0.0:9100",
        "IGGY_ROOT_PASSWORD": "not-a-config-key",
    }
    broker(node, "/opt/iggy", env)
    write_tree(node, {"opt/iggy/conf/server.toml": CONFIG_08, "data/iggy/logs/a": ""})
    install = find(tmp_path, node)
    assert str(install.config.path) == "/opt/iggy/conf/server.toml"
    assert install.config_source == "IGGY_CONFIG_PATH of pid 4242"
    assert install.data_dir == "/data/iggy" and install.data_dir_source.startswith(
        "IGGY_SYSTEM_PATH"
    )
    assert install.setting("http.jwt.encoding_secret") == "s3cr3t-from-env"
    assert install.setting("tcp.address") == "0.0.0.0:9100"
    assert install.config.overrides == {
        "http.jwt.encoding_secret": "IGGY_HTTP_JWT_ENCODING_SECRET",
        "system.path": "IGGY_SYSTEM_PATH",
        "tcp.address": "IGGY_TCP_ADDRESS",
    }
    assert "s3cr3t" not in str(install.describe())  # where things are, never values


def test_dotenv_in_the_cwd_is_read_and_the_process_env_wins(tmp_path: Path, node: Path) -> None:
    broker(node, "/srv/iggy", {"IGGY_TCP_ADDRESS": "0.0.0.0:8090"})
    write_tree(
        node,
        {
            "srv/iggy/core/server/config.toml": CONFIG_08,
            "srv/iggy/.env": '# comment\nexport IGGY_HTTP_ADDRESS="0.0.0.0:3001"\n'
            "IGGY_TCP_ADDRESS=10.0.0.1:1\n",
        },
    )
    install = find(tmp_path, node)
    assert install.setting("http.address") == "0.0.0.0:3001"
    assert install.setting("tcp.address") == "0.0.0.0:8090"


def test_ports_follow_the_env_overrides(tmp_path: Path, node: Path) -> None:
    broker(node, "/srv/iggy", {"IGGY_TCP_ADDRESS": "0.0.0.0:9100", "IGGY_HTTP_ENABLED": "false"})
    write_tree(node, {"srv/iggy/core/server/config.toml": CONFIG_08})
    config = Config(checks=ChecksConfig(roots=fixture_roots(node)))
    ports = read_broker_ports(make_context(tmp_path, config=config), "x")
    assert ports.ports == [("tcp", 9100)]
    assert ports.source == "iggy config"


def test_broker_in_a_container_is_reached_through_its_root(tmp_path: Path, node: Path) -> None:
    broker(node, "/app")
    write_tree(
        node,
        {
            f"proc/{PID}/root/app/core/server/config.toml": CONFIG_08,
            f"proc/{PID}/root/app/local_data/logs/iggy-server.log": "x\n",
        },
    )
    install = find(tmp_path, node)
    assert str(install.config.path) == f"/proc/{PID}/root/app/core/server/config.toml"
    assert install.data_dir == f"/proc/{PID}/root/app/local_data"
    assert install.data_dir_source.endswith("inside its container")
    assert install.logs_dir == f"/proc/{PID}/root/app/local_data/logs"


def test_agent_config_overrides_discovery(tmp_path: Path, node: Path) -> None:
    broker(node, "/srv/iggy", {"IGGY_SYSTEM_PATH": "/elsewhere"})
    write_tree(node, {"etc/custom/iggy.toml": CONFIG_08, "var/lib/iggy/data/logs/x": ""})
    install = find(
        tmp_path,
        node,
        config_path="/etc/custom/iggy.toml",
        data_dir="/var/lib/iggy/data",
        logs_dir="/var/log/iggy",
    )
    assert str(install.config.path) == "/etc/custom/iggy.toml"
    assert install.config_source == "config iggy.config_path"
    assert install.data_dir == "/var/lib/iggy/data"
    assert install.data_dir_source == "config iggy.data_dir"
    assert (install.logs_dir, install.logs_dir_source) == ("/var/log/iggy", "config iggy.logs_dir")


def test_unparseable_config_is_described_not_raised(tmp_path: Path, node: Path) -> None:
    broker(node, "/srv/iggy")
    write_tree(node, {"srv/iggy/core/server/config.toml": "[http\naddress = "})
    install = find(tmp_path, node)
    assert install.found and install.config.problem.startswith("not valid TOML")
    assert install.data_dir == "/srv/iggy/local_data"  # Iggy's default
    assert install.data_dir_state == "missing"


def test_data_dir_only_is_found(tmp_path: Path, node: Path) -> None:
    write_tree(node, {"app/local_data/streams/x": ""})
    install = find(tmp_path, node)
    assert install.found and install.broker is None
    assert install.data_dir == "/app/local_data"
    assert install.logs_dir == "/app/local_data/logs"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("FALSE", False),
        ("8090", 8090),
        ("-1", -1),
        ("0.5", 0.5),
        ("[a, 'b']", ["a", "b"]),
        ("[]", []),
        ("127.0.0.1:3000", "127.0.0.1:3000"),
        ("1 h", "1 h"),
    ],
)
def test_env_values_parse_as_iggy_parses_them(text: str, value: object) -> None:
    assert env_value(text) == value


def test_key_paths_prefer_the_longest_table_and_keep_underscored_leaves() -> None:
    tables = {"system": {"memory_pool": {}, "path": "x"}, "http": {"jwt": {}}}
    assert key_path(tables, "SYSTEM_MEMORY_POOL_SIZE") == ["system", "memory_pool", "size"]
    assert key_path(tables, "HTTP_JWT_USE_BASE64_SECRET") == ["http", "jwt", "use_base64_secret"]
    assert key_path(tables, "SYSTEM_PATH") == ["system", "path"]
    assert key_path(tables, "UNKNOWN_THING") is None


def test_overrides_create_missing_tables_and_skip_empty_values() -> None:
    config = ServerConfig(None)
    apply_env_overrides(
        config, {"IGGY_SYSTEM_ENCRYPTION_ENABLED": "true", "IGGY_HTTP_ADDRESS": "", "PATH": "/x"}
    )
    assert config.data == {"system": {"encryption": {"enabled": True}}}
    assert config.setting("system.encryption.enabled") is True
    assert config.setting("http.address", "none") == "none"


def test_a_containerised_broker_never_takes_the_hosts_config(tmp_path: Path, node: Path) -> None:
    # The host has its own /etc/iggy/server.toml; the broker in its container has none
    # (the 0.8 image runs on built-in defaults): the host's file is not the broker's.
    broker(node, "/app")
    write_tree(
        node,
        {
            "etc/iggy/server.toml": CONFIG_08.replace("local_data", "/srv/host-data"),
            f"proc/{PID}/root/app/local_data/logs/iggy-server.log": "x\n",
        },
    )
    install = find(tmp_path, node)
    assert install.config.path is None
    assert f"/proc/{PID}/root/etc/iggy/server.toml" in install.skip_reason()
    assert install.data_dir == f"/proc/{PID}/root/app/local_data"


def test_an_absolute_log_path_stays_inside_the_container(tmp_path: Path, node: Path) -> None:
    broker(node, "/app")
    config = CONFIG_08.replace(
        '[system.logging]\npath = "logs"', '[system.logging]\npath = "/var/log/iggy"'
    )
    write_tree(
        node,
        {
            f"proc/{PID}/root/app/core/server/config.toml": config,
            f"proc/{PID}/root/app/local_data/streams/.keep": "",
            f"proc/{PID}/root/var/log/iggy/iggy-server.log": "x\n",
        },
    )
    install = find(tmp_path, node)
    assert install.logs_dir == f"/proc/{PID}/root/var/log/iggy"
    assert install.logs_dir_source == "[system.logging] path"


def test_relative_system_path_without_a_broker(tmp_path: Path, node: Path) -> None:
    # No broker to give the working directory: beside the config, as a source tree has it,
    # else said plainly rather than guessed as /local_data.
    write_tree(node, {"opt/iggy/core/server/config.toml": CONFIG_08})
    install = find(tmp_path, node, config_path="/opt/iggy/core/server/config.toml")
    assert install.data_dir == ""
    assert "system.path 'local_data' is relative" in install.skip_reason()
    write_tree(node, {"opt/iggy/local_data/streams/.keep": ""})
    install = find(tmp_path, node, config_path="/opt/iggy/core/server/config.toml")
    assert install.data_dir == "/opt/iggy/local_data"
    assert "found beside the config" in install.data_dir_source
