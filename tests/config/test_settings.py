"""Settings: one validated path for the environment and for flags; wiring builds collaborators."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kiln import wiring
from kiln.config.errors import ClusterUnavailable, EngineUnavailable, SettingsError
from kiln.config.settings import KilnSettings, get_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for key in list(os.environ):
        if key.startswith("KILN_"):
            monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_overrides_are_validated_like_the_environment(clean_env) -> None:
    settings = KilnSettings()
    with pytest.raises(SettingsError, match="target 'mars' is not valid") as caught:
        settings.with_overrides(target="mars")
    assert caught.value.setting == "target"
    with pytest.raises(SettingsError, match="keep 0 is not valid"):
        settings.with_overrides(keep=0)
    with pytest.raises(SettingsError, match="gate_threshold 2"):
        settings.with_overrides(gate_threshold=2)
    with pytest.raises(SettingsError, match="serve_port 99999"):
        settings.with_overrides(serve_port=99999)


def test_none_leaves_a_setting_alone_and_overrides_win(clean_env) -> None:
    clean_env.setenv("KILN_KEEP", "3")
    clean_env.setenv("KILN_TARGET", "kubernetes")
    settings = KilnSettings()
    merged = settings.with_overrides(keep=None, target="local", store="/tmp/elsewhere")
    assert (merged.keep, merged.target, merged.store) == (3, "local", "/tmp/elsewhere")
    assert settings.with_overrides(keep=None) is settings
    # the merge starts from these settings, not from the environment again
    assert KilnSettings(keep=7).with_overrides(store="x").keep == 7


def test_an_unknown_override_is_a_programming_error(clean_env) -> None:
    with pytest.raises(TypeError, match="unknown setting"):
        KilnSettings().with_overrides(taget="local")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KILN_TARGET", "k8s"),
        ("KILN_KEEP", "0"),
        ("KILN_LOCAL_PORT", "99999"),
        ("KILN_RETRIES", "many"),
        ("KILN_REPOSITORY", "Not/Valid"),
        ("KILN_K8S_POLL_INTERVAL", "0"),
    ],
)
def test_a_bad_environment_value_names_the_variable(clean_env, variable, value) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        get_settings()
    message = str(caught.value)
    assert message.startswith(f"{variable}={value!r} is not valid")
    assert message.endswith(f"fix or unset {variable}") and "\n" not in message


def test_every_knob_has_a_default_and_the_wheel_cache_follows_the_state_dir(clean_env) -> None:
    clean_env.setenv("KILN_STATE_DIR", "/tmp/kiln-state-x")
    settings = get_settings()
    assert settings.wheel_cache_dir == Path("/tmp/kiln-state-x/cache/wheels")
    assert settings.with_overrides(cache_dir="/tmp/w").wheel_cache_dir == Path("/tmp/w")
    assert settings.serve_port != settings.local_port


def test_wiring_passes_the_settings_on(clean_env, tmp_path: Path) -> None:
    settings = KilnSettings(
        store=str(tmp_path / "store"),
        registry="127.0.0.1:5999",
        registry_timeout=4,
        base_repository="mine/base",
        builder="layer",
    )
    assert wiring.open_store(settings).url.endswith("store")
    registry = wiring.open_registry(settings)
    assert (registry.host, registry.timeout) == ("127.0.0.1:5999", 4)
    options = wiring.build_options(settings, force=True)
    assert (options.base_repository, options.builder, options.force) == ("mine/base", "layer", True)


def test_an_unreachable_engine_says_kiln_up_and_names_docker_host(clean_env, tmp_path) -> None:
    clean_env.setenv("DOCKER_HOST", f"unix://{tmp_path}/absent.sock")
    with pytest.raises(EngineUnavailable) as caught:
        wiring.engine_client(KilnSettings(engine_timeout=2))
    message = str(caught.value)
    assert f"unix://{tmp_path}/absent.sock (no socket there)" in message
    assert "`kiln up`" in message and "DOCKER_HOST" in message and "\n" not in message

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    clean_env.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
    with pytest.raises(EngineUnavailable, match="connection refused"):
        wiring.engine_client(KilnSettings(engine_timeout=2))


def test_the_engine_socket_defaults_to_the_state_dir(clean_env, tmp_path) -> None:
    clean_env.delenv("DOCKER_HOST", raising=False)
    assert wiring.engine_host(KilnSettings(state_dir=tmp_path)) == f"unix://{tmp_path}/podman.sock"


def test_a_missing_kubeconfig_names_it(clean_env, tmp_path) -> None:
    clean_env.setenv("KUBECONFIG", str(tmp_path / "absent-config"))
    clean_env.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterUnavailable) as caught:
        wiring.kube_cluster(KilnSettings())
    message = str(caught.value)
    assert f"kubeconfig {tmp_path / 'absent-config'}" in message
    assert "KILN_K8S_CONTEXT" in message and "--target local" in message


def test_the_cluster_gets_the_poll_interval_and_timeouts(clean_env, tmp_path) -> None:
    config = tmp_path / "config"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    clean_env.setenv("KUBECONFIG", str(config))
    clean_env.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cluster = wiring.kube_cluster(
        KilnSettings(k8s_poll_interval=0.05, k8s_request_timeout=3, k8s_namespace="team-a")
    )
    assert (cluster.poll_interval, cluster.request_timeout) == (0.05, 3)
    assert cluster.namespace == "team-a"
