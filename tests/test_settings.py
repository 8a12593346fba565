"""Configuration: environment parsing and the README's table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.settings import Settings, SettingsError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_defaults_and_environment() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 12800)
    assert settings.data_dir == Path("data")
    assert settings.admin_password is None
    settings = Settings.from_env(
        {
            "O16N_PORT": "8080",
            "O16N_CONTAINER_MEMORY": "512MiB",
            "O16N_CONTAINER_READ_ONLY": "false",
            "O16N_ADMIN_PASSWORD": "s3cret-s3cret",
        }
    )
    assert settings.port == 8080
    assert int(settings.container_memory) == 512 * 1024**2
    assert settings.container_read_only is False
    assert "s3cret" not in repr(settings) and settings.describe()["admin_password"] == "***"


def test_invalid_values_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="O16N_PORT"):
        Settings.from_env({"O16N_PORT": "http"})
    with pytest.raises(SettingsError, match="O16N_CONTAINER_USER"):
        Settings.from_env({"O16N_CONTAINER_USER": "root"})


def test_every_setting_is_in_the_readme_table() -> None:
    text = README.read_text()
    missing = [
        f"O16N_{name.upper()}"
        for name in Settings.model_fields
        if f"`O16N_{name.upper()}`" not in text
    ]
    assert missing == []


def test_service_pool_defaults_follow_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)))
    settings = Settings.from_env({})
    assert (settings.service_pool_max, settings.service_pool_limit) == (4, 32)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(24)))
    settings = Settings.from_env({})
    assert (settings.service_pool_max, settings.service_pool_limit) == (24, 48)
    assert Settings.from_env({"O16N_SERVICE_POOL_MAX": "3"}).service_pool_max == 3


def test_compute_nodes_are_parsed_normalised_and_deduplicated(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    settings = Settings.from_env(
        {
            "O16N_COMPUTE_NODES": "ssh://o16n@Node1.example, ssh://o16n@node1.example:22\n"
            "unix:///run/d2.sock  ssh://o16n@node2:2222",
            "O16N_SSH_KNOWN_HOSTS": str(known),
        }
    )
    assert [n.entry for n in settings.compute_node_list] == [
        "ssh://o16n@node1.example",
        "unix:///run/d2.sock",
        "ssh://o16n@node2:2222",
    ]
    assert settings.ssh_known_hosts == known and settings.ssh_key is None
    defaults = Settings.from_env({})
    assert defaults.compute_node_list == []
    assert defaults.node_dir == Path("/var/lib/o16n-node") and defaults.node_probe_seconds == 2.0


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"O16N_COMPUTE_NODES": "unix:///run/d.sock http://1.1.1.1"}, "'http://1.1.1.1'"),
        ({"O16N_COMPUTE_NODES": "tcp://10.0.0.1:2375"}, "'tcp://10.0.0.1:2375'"),
        ({"O16N_COMPUTE_NODES": "ssh://host"}, "'ssh://host'"),
        ({"O16N_COMPUTE_NODES": "ssh://o16n@node1"}, "O16N_SSH_KNOWN_HOSTS"),
        ({"O16N_NODE_DIR": "relative/dir"}, "absolute"),
        ({"O16N_NODE_PROBE_SECONDS": "0"}, "O16N_NODE_PROBE_SECONDS"),
    ],
)
def test_bad_compute_node_settings_stop_the_start(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named) as caught:
        Settings.from_env(environ)
    assert "O16N_" in str(caught.value)


def test_local_compute_nodes_need_no_known_hosts() -> None:
    settings = Settings.from_env({"O16N_COMPUTE_NODES": "unix:///run/d2.sock"})
    assert [n.scheme for n in settings.compute_node_list] == ["unix"]
