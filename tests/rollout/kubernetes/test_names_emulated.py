"""Two model names side by side in one namespace, against the EMULATED API server
(tests/support/k8s_emulator.py).

Each name has its own Deployment, Service, autoscaler and disruption budget, and its own
candidate: the default name keeps the objects kiln made before names existed (`kiln`),
another name's are `kiln-<name>`. A rollout, a rollback, the logs and an undeploy of one
name read and write that name's objects only. Each name keeps its own deployment record
(a store of its own here: the store's own per-name records are not this suite's subject).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from kiln.config.errors import RolloutError, SettingsError
from kiln.config.names import DEFAULT_NAME
from kiln.config.settings import KilnSettings, get_settings
from kiln.rollout import KUBERNETES, roll_out
from kiln.rollout.kubernetes.api import ApiStatusError
from kiln.rollout.kubernetes.manifests import (
    MANIFEST_DIR,
    MODEL_LABEL,
    candidate_of,
    load_base,
    render_manifests,
)
from kiln.rollout.kubernetes.pod_logs import LogRequest, stream_logs
from kiln.rollout.kubernetes.target import KubernetesTarget
from kiln.rollout.smoke import http_caller
from kiln.rollout.target import Deployed, is_transient
from kiln.store.artifact_store import ArtifactStore
from tests.rollout.kubernetes.conftest import NS, SAMPLE_INPUT
from tests.support.k8s_emulator import EmulatedApiServer, use_emulated_cluster

WINE = "wine"
NAME = "app.kubernetes.io/name"
# The Deployment (and Service, HPA, PDB) each name's objects are called.
OBJECT = {DEFAULT_NAME: "kiln", WINE: "kiln-wine"}
KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget")

Target = Callable[[str], KubernetesTarget]
Add = Callable[[str, str], tuple[str, str]]


@pytest.fixture
def target(emulator: EmulatedApiServer) -> Iterator[Target]:
    """The Kubernetes target of a model name, in the one namespace both names share."""
    configuration = client.Configuration(host=emulator.url)
    with client.ApiClient(configuration) as api_client:

        def make(model: str) -> KubernetesTarget:
            return KubernetesTarget(
                api_client,
                namespace=NS,
                timeout=30,
                poll_interval=0.0,
                request_timeout=5,
                model=model,
            )

        yield make


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, ArtifactStore]:
    return {name: ArtifactStore(tmp_path / name) for name in OBJECT}


@pytest.fixture
def add(stores: dict[str, ArtifactStore], emulator: EmulatedApiServer) -> Add:
    """Store a version of a name's model, record its image (its own repository), push it."""

    def add(model: str, label: str) -> tuple[str, str]:
        store = stores[model]
        version = store.put(
            f"{model} {label}".encode(),
            {0: "setosa", 1: "virginica"},
            {"sample_input": SAMPLE_INPUT},
        )
        image = f"127.0.0.1:5000/kiln/{model}@sha256:{version[:16].ljust(64, '0')}"
        store.record_image(version, image)
        emulator.cluster.push(image, version)
        return version, image

    return add


def serves(cluster: KubernetesTarget, version: str, times: int = 4) -> None:
    """Requests through the name's Service reach only pods of that name's `version`."""
    call = http_caller(cluster.endpoint)
    for _ in range(times):
        reply = call("GET", "/metadata", None)
        assert (reply.status, reply.json().get("version")) == (200, version)
    reply = call("POST", "/predict", {"data": SAMPLE_INPUT})
    assert (reply.status, len(reply.json()["prediction"])) == (200, len(SAMPLE_INPUT))


def both_running(stores: dict[str, ArtifactStore], add: Add, target: Target) -> dict:
    """Each name rolled out to its first version; {name: (target, version, image)}."""
    running = {}
    for model in OBJECT:
        version, image = add(model, "a")
        cluster = target(model)
        roll_out(stores[model], version, cluster)
        running[model] = (cluster, version, image)
    return running


def kiln_objects(emulator: EmulatedApiServer) -> set[tuple[str, str]]:
    return {(kind, name) for kind, ns, name in emulator.cluster.objects if ns == NS}


PLURALS = {"deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets", "pods"}


def requested(requests: list[tuple[str, str]]) -> tuple[set[str], set[str]]:
    """(object and pod names the requests' paths name, label selectors they list pods by)."""
    names, selectors = set(), set()
    for _, path in requests:
        url = urllib.parse.urlsplit(path)
        parts = url.path.split("/")
        pairs = zip(parts, parts[1:], strict=False)
        names |= {name.split(":")[0] for plural, name in pairs if plural in PLURALS}
        selectors |= {v for k, v in urllib.parse.parse_qsl(url.query) if k == "labelSelector"}
    return names, selectors


def test_two_names_roll_out_side_by_side_each_service_selecting_only_its_own_pods(
    stores: dict[str, ArtifactStore], add: Add, target: Target, emulator: EmulatedApiServer
) -> None:
    running = both_running(stores, add, target)

    state = emulator.cluster
    assert kiln_objects(emulator) == {(kind, name) for kind in KINDS for name in OBJECT.values()}
    for model, (cluster, version, image) in running.items():
        name = OBJECT[model]
        assert cluster.deployment == name
        assert state.serving_image(NS, name) == image
        assert cluster.current() == Deployed(version, image)  # a request: endpoints catch up
        pods = {pod.name for pod in state.pods(NS, name)}
        assert pods and set(state.endpoints[(NS, name)]) == pods
        for kind in KINDS:
            obj = state.objects[(kind, NS, name)]
            assert obj["metadata"]["labels"][MODEL_LABEL] == model
        hpa = state.objects[("HorizontalPodAutoscaler", NS, name)]
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert stores[model].deployment(KUBERNETES).current == version
        assert cluster.endpoint.endswith(f"/namespaces/{NS}/services/{name}:http/proxy")
        serves(cluster, version)
    assert not {p.name for p in state.pods(NS, "kiln")} & {
        p.name for p in state.pods(NS, "kiln-wine")
    }


@pytest.mark.parametrize("failing", [DEFAULT_NAME, WINE])
def test_one_names_failed_rollout_is_rolled_back_while_the_other_serves_untouched(
    stores: dict[str, ArtifactStore],
    add: Add,
    target: Target,
    emulator: EmulatedApiServer,
    failing: str,
) -> None:
    """`failing` runs B; B fails its smoke test now, so a reship of B restores A there. The
    other name's objects are never requested, and its Deployment is exactly as it was."""
    running = both_running(stores, add, target)
    (other,) = [model for model in OBJECT if model != failing]
    cluster, a, a_image = running[failing]
    b, b_image = add(failing, "b")
    roll_out(stores[failing], b, cluster)
    state = emulator.cluster
    other_name = OBJECT[other]
    untouched = state.deployment(NS, other_name)
    other_pods = [(p.name, p.image) for p in state.pods(NS, other_name)]
    before = len(state.requests)
    state.fault(b_image, predict_status=500)

    with pytest.raises(RolloutError, match="POST /predict answered 500") as caught:
        roll_out(stores[failing], b, cluster)

    assert str(caught.value).endswith(f"; rolled back to {a} ({a_image})")
    name = OBJECT[failing]
    assert state.template_image(NS, name) == a_image
    assert state.serving_image(NS, name) == a_image
    assert state.deployment(NS, f"{name}-candidate") is None
    assert stores[failing].deployment(KUBERNETES).current == a
    # the other name: not one request named its objects or pods, nothing of it changed
    names, selectors = requested(state.requests[before:])
    assert {name, f"{name}-candidate"} <= names
    assert not names & {other_name, f"{other_name}-candidate", *(p for p, _ in other_pods)}
    assert selectors and {dict(p.split("=") for p in s.split(","))[NAME] for s in selectors} == {
        name
    }
    assert state.deployment(NS, other_name) == untouched
    # each Service's endpoints: its own name's pods, the restored ones and the untouched ones
    assert set(state.endpoints[(NS, name)]) == {p.name for p in state.pods(NS, name)}
    assert set(state.endpoints[(NS, other_name)]) == {p for p, _ in other_pods}
    assert [(p.name, p.image) for p in state.pods(NS, other_name)] == other_pods
    _, other_version, other_image = running[other]
    assert untouched["spec"]["template"]["spec"]["containers"][0]["image"] == other_image
    serves(running[other][0], other_version)
    serves(cluster, a)


def test_the_default_name_adopts_the_objects_an_earlier_kiln_made(
    stores: dict[str, ArtifactStore], add: Add, target: Target, emulator: EmulatedApiServer
) -> None:
    """What a release before names applied (the same objects, no model label) is updated in
    place: same names, same selector (immutable), and no second set of objects appears."""
    old, old_image = add(DEFAULT_NAME, "a")
    cluster = target(DEFAULT_NAME)
    earlier = render_manifests(old_image, old, NS)
    for obj in earlier:
        obj["metadata"]["labels"].pop(MODEL_LABEL)
        if obj["kind"] == "Deployment":
            obj["spec"]["template"]["metadata"]["labels"].pop(MODEL_LABEL)
    cluster.apply(earlier)
    cluster.wait_rolled_out()
    state = emulator.cluster
    uid = state.deployment(NS, "kiln")["metadata"]["uid"]
    selector = state.deployment(NS, "kiln")["spec"]["selector"]
    new, new_image = add(DEFAULT_NAME, "b")

    roll_out(stores[DEFAULT_NAME], new, cluster)

    assert kiln_objects(emulator) == {(kind, "kiln") for kind in KINDS}
    deployment = state.deployment(NS, "kiln")
    assert deployment["metadata"]["uid"] == uid
    assert deployment["spec"]["selector"] == selector
    assert deployment["metadata"]["labels"][MODEL_LABEL] == DEFAULT_NAME
    assert deployment["spec"]["template"]["metadata"]["labels"][MODEL_LABEL] == DEFAULT_NAME
    assert state.serving_image(NS, "kiln") == new_image
    serves(cluster, new)


def test_undeploying_one_name_leaves_the_other_serving(
    stores: dict[str, ArtifactStore], add: Add, target: Target, emulator: EmulatedApiServer
) -> None:
    running = both_running(stores, add, target)
    wine, default = running[WINE][0], running[DEFAULT_NAME][0]
    (main,) = [
        o
        for o in render_manifests(running[WINE][2], "x", NS, model=WINE)
        if o["kind"] == "Deployment"
    ]
    wine.apply([candidate_of(main)], keep_replicas=True)  # a killed run's leftover

    removed = wine.undeploy()

    assert sorted(removed) == sorted(
        [f"{kind}/kiln-wine" for kind in KINDS] + ["Deployment/kiln-wine-candidate"]
    )
    assert kiln_objects(emulator) == {(kind, "kiln") for kind in KINDS}
    assert emulator.cluster.pods(NS, "kiln-wine") == []
    assert wine.current() is None and wine.live() == []
    assert default.current() == Deployed(running[DEFAULT_NAME][1], running[DEFAULT_NAME][2])
    serves(default, running[DEFAULT_NAME][1])
    assert wine.undeploy() == []  # nothing left of it

    assert sorted(default.undeploy()) == sorted(f"{kind}/kiln" for kind in KINDS)
    assert kiln_objects(emulator) == set()
    assert ("Namespace", "", NS) in emulator.cluster.objects  # never kiln's to delete


def test_current_live_and_logs_are_each_names_own(
    stores: dict[str, ArtifactStore], add: Add, target: Target, emulator: EmulatedApiServer
) -> None:
    running = both_running(stores, add, target)
    for model, (cluster, version, image) in running.items():
        name = OBJECT[model]
        assert cluster.current() == Deployed(version, image)
        [line] = cluster.live()
        assert line.startswith(f"{version} {image} Deployment {NS}/{name} replicas ")
        lines: list[str] = []
        pods = stream_logs(cluster.api, NS, cluster.deployment, LogRequest(), lines.append)
        assert pods == sorted(p.name for p in emulator.cluster.pods(NS, name))
        assert lines and all(pod.startswith(f"{name}-") for pod in pods)
        other = [p.name for m in OBJECT if m != model for p in emulator.cluster.pods(NS, OBJECT[m])]
        assert not any(pod in line for line in lines for pod in other)


def deployer_role() -> dict:
    documents = yaml.safe_load_all((MANIFEST_DIR / "admin" / "rbac.yaml").read_text())
    return next(d for d in documents if d and d["kind"] == "Role")


def role_for(role: dict, names: list[str]) -> dict:
    """The deployer's Role with another name's objects beside the default's, as the how-to
    tells an admin to grant them: `kiln-<name>` wherever it says `kiln`, and
    `kiln-<name>-candidate` wherever it says `kiln-candidate`. No verb is added."""
    for rule in role["rules"]:
        if "resourceNames" in rule:
            granted = rule["resourceNames"]
            rule["resourceNames"] = granted + [
                n.replace("kiln", f"kiln-{name}", 1) for name in names for n in granted
            ]
    return role


def test_the_deployer_role_covers_another_name_once_its_objects_are_named_in_it(
    stores: dict[str, ArtifactStore], add: Add, target: Target, emulator: EmulatedApiServer
) -> None:
    shipped = deployer_role()
    emulator.cluster.allow(shipped)
    version, _ = add(WINE, "a")
    with pytest.raises(
        ApiStatusError, match='deployments \\\\?"kiln-wine\\\\?" is forbidden'
    ) as caught:
        roll_out(stores[WINE], version, target(WINE))  # the shipped Role names `kiln` only
    assert caught.value.status == 403 and not is_transient(caught.value)
    assert emulator.cluster.deployment(NS, "kiln-wine") is None

    role = role_for(deployer_role(), [WINE])
    assert [r["verbs"] for r in role["rules"]] == [r["verbs"] for r in shipped["rules"]]
    emulator.cluster.allow(role)
    emulator.cluster.forbidden.clear()
    running = both_running(stores, add, target)
    assert emulator.cluster.forbidden == []
    for _model, (cluster, version, _image) in running.items():
        emulator.cluster.rbac = None  # a user's request: the deployer has no services/proxy
        serves(cluster, version, times=1)


@pytest.mark.parametrize(
    ("model", "error", "message"),
    [
        ("wine-candidate", RolloutError, "its objects would share names"),
        ("candidate", RolloutError, "its objects would share names"),
        ("Wine", SettingsError, "is not usable"),
    ],
)
def test_a_name_kiln_cannot_name_objects_after_is_refused_before_any_request(
    target: Target, emulator: EmulatedApiServer, model: str, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        target(model)
    assert emulator.cluster.requests == []


def test_the_base_names_each_object_once() -> None:
    """for_model renames by the base's names: two objects of one kind under one name
    would make two names' objects collide."""
    names = [(o["kind"], o["metadata"]["name"]) for o in load_base()]
    assert len(names) == len(set(names))


@pytest.fixture
def kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: EmulatedApiServer
) -> Iterator[None]:
    """The environment a command runs in: a kubeconfig naming the emulator, no KILN_*."""
    (tmp_path / "cli").mkdir()  # apart from the stores the other fixtures made
    use_emulated_cluster(monkeypatch, emulator, tmp_path / "cli", NS)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("kubeconfig")
def test_the_wired_target_and_kiln_undeploy_work_on_kiln_model_only(
    stores: dict[str, ArtifactStore],
    add: Add,
    target: Target,
    emulator: EmulatedApiServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kiln import wiring
    from kiln.cli.app import main

    both_running(stores, add, target)
    wired = wiring.kube_cluster(KilnSettings(model=WINE))
    assert (wired.model, wired.deployment, wired.namespace) == (WINE, "kiln-wine", NS)
    assert wiring.kube_cluster(KilnSettings()).deployment == "kiln"
    monkeypatch.setenv("KILN_MODEL", WINE)
    get_settings.cache_clear()

    with pytest.raises(SystemExit) as exited:
        main(["undeploy"])

    out, err = capsys.readouterr()
    assert exited.value.code in (0, None), err
    assert out.startswith("undeployed kubernetes: removed ")
    removed = out.strip().removeprefix("undeployed kubernetes: removed ").split(", ")
    assert sorted(removed) == sorted(f"{kind}/kiln-wine" for kind in KINDS)
    assert kiln_objects(emulator) == {(kind, "kiln") for kind in KINDS}
