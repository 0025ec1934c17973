"""Pod runner decisions: what a pod says (env, image, status), which processes to start and
stop, the readiness it writes back, the labels of its Prometheus targets."""

import itertools
from pathlib import Path
from typing import Any

import pytest

from modeldeploy import contract as c
from modeldeploy.devenv.containers import (
    ContainerImages,
    ContainerLaunch,
    container_name,
    on_loopback_registry,
)
from modeldeploy.devenv.podrunner import process_env
from modeldeploy.devenv.pods import (
    FALLBACK_TO_LOGS,
    NOT_READY_REASON,
    READY_REASON,
    ContainerReport,
    PodKey,
    ServiceRef,
    ServiceURL,
    cluster_service_url,
    non_loopback_url,
    plan_processes,
    pod_view,
    resolve_env,
    service_members,
    status_patch,
    target_labels,
    termination_message,
    wanted,
)
from modeldeploy.resources.names import LABEL_FALLBACK, LABEL_NAME, LABEL_REVISION

pytestmark = pytest.mark.unit

IMAGE = "registry.example/ml/churn@sha256:" + "a" * 64
IMAGES = {IMAGE}


def pod(
    name: str = "churn-abc-1",
    *,
    image: str = IMAGE,
    phase: str = "Running",
    ready: bool = True,
    deleting: bool = False,
    env: list[dict[str, Any]] | None = None,
    containers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ml",
        "uid": f"uid-{name}",
        "labels": {LABEL_NAME: "churn", LABEL_REVISION: "abc", "team": "risk"},
        "annotations": {"owner": "ana"},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-21T10:00:00Z"
    return {
        "metadata": meta,
        "spec": {
            "nodeName": "kwok-node-0",
            "containers": [
                {
                    "name": "model",
                    "image": image,
                    "env": env or [],
                    "readinessProbe": {"httpGet": {"path": "/v2/models/churn/ready"}},
                }
            ]
            if containers is None
            else containers,
        },
        "status": {
            "phase": phase,
            "podIP": "10.0.0.9",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def view(**kwargs: Any) -> Any:
    result = pod_view(pod(**kwargs), IMAGES)
    assert result is not None
    return result


# --- env -------------------------------------------------------------------------------


def test_env_plain_values_and_field_refs_to_the_pods_own_metadata() -> None:
    resolved = resolve_env(
        [
            {"name": c.ENV_MODEL_NAME, "value": "churn"},
            {"name": "EMPTY"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
            {
                "name": "OWNER",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['owner']"}},
            },
        ],
        pod(),
    )
    assert resolved.env == {
        c.ENV_MODEL_NAME: "churn",
        "EMPTY": "",
        "POD": "churn-abc-1",
        "NS": "ml",
        "NODE": "kwok-node-0",
        "TEAM": "risk",
        "OWNER": "ana",
    }
    assert resolved.skipped == ()
    assert resolved.services == {}


def test_env_never_carries_addresses_secrets_or_other_hosts() -> None:
    resolved = resolve_env(
        [
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "NOLABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['x']"}}},
            {"name": c.ENV_SHADOW_URL, "value": "http://churn-canary.ml.svc"},
            {"name": "ELSEWHERE", "value": "https://10.0.0.7:8443/x"},
            {"name": "LOCAL", "value": "http://127.0.0.1:9000/x"},
            {"name": "TEXT", "value": "see http docs"},
        ],
        pod(),
    )
    assert resolved.env == {"LOCAL": "http://127.0.0.1:9000/x", "TEXT": "see http docs"}
    # The cluster Service's URL is set apart, for its local forwarder.
    assert resolved.services == {c.ENV_SHADOW_URL: ServiceURL(ServiceRef("ml", "churn-canary"), "")}
    assert resolved.skipped == (
        "IP (fieldRef status.podIP)",
        "HOST (fieldRef status.hostIP)",
        "KEY (secretKeyRef)",
        "CPU (resourceFieldRef)",
        "NOLABEL (fieldRef metadata.labels['x'])",
        "ELSEWHERE (non-loopback URL)",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://churn-canary.ml.svc", ("ml", "churn-canary", "")),
        ("http://churn-canary.ml.svc:80/", ("ml", "churn-canary", "/")),
        ("http://a.ml.svc.cluster.local./v2?x=1", ("ml", "a", "/v2?x=1")),
        ("https://churn-canary.ml.svc", None),  # its certificate names the Service
        ("http://churn-canary.ml", None),  # may as well be a host elsewhere
        ("http://churn-canary", None),
        ("http://1st.ml.svc", None),  # not a Service name
        ("http://u:p@a.ml.svc", None),
        ("http://10.0.0.7", None),
        ("plain", None),
    ],
)
def test_cluster_service_url(value: str, expected: tuple[str, str, str] | None) -> None:
    found = cluster_service_url(value)
    if expected is None:
        assert found is None
    else:
        namespace, name, target = expected
        assert found == ServiceURL(ServiceRef(namespace, name), target)
        assert found.on("127.0.0.1:4100") == f"http://127.0.0.1:4100{target}"


def test_pod_view_sets_cluster_service_urls_apart() -> None:
    shadow = {"name": c.ENV_SHADOW_URL, "value": "http://churn-canary.ml.svc"}
    served = view(env=[shadow, {"name": c.ENV_SHADOW_PERCENT, "value": "50"}])
    assert served.env == {c.ENV_SHADOW_PERCENT: "50"}
    assert served.service_env == {
        c.ENV_SHADOW_URL: ServiceURL(ServiceRef("ml", "churn-canary"), "")
    }
    assert served.skipped_env == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://churn-canary.ml.svc", True),
        ("https://10.0.0.7:8443/x", True),
        ("http://localhost:8080", False),
        ("http://127.0.0.1", False),
        ("ftp://10.0.0.7", False),
        ("plain", False),
    ],
)
def test_non_loopback_url(value: str, expected: bool) -> None:
    assert non_loopback_url(value) is expected


def test_process_env_drops_the_runners_own_modeldeploy_settings() -> None:
    served = view(env=[{"name": c.ENV_REVISION, "value": "abc"}])
    base = {"PATH": "/bin", c.ENV_SHADOW_URL: "x", c.ENV_REVISION: "old"}
    env = process_env(served.env, base)
    assert env == {"PATH": "/bin", c.ENV_REVISION: "abc"}


# --- pod views ----------------------------------------------------------------------------


def test_pod_view_reads_labels_image_status_and_probe() -> None:
    seen = view(env=[{"name": c.ENV_MODEL_NAME, "value": "churn-model"}])
    assert seen.key == PodKey("ml", "churn-abc-1", "uid-churn-abc-1")
    assert (seen.md_name, seen.revision, seen.container) == ("churn", "abc", "model")
    assert seen.known
    assert seen.running
    assert seen.ready
    assert not seen.terminating
    assert seen.ready_path == "/v2/models/churn/ready"
    assert seen.model == "churn-model"
    assert view().model == "churn"  # no env: the ModelDeployment's name


def test_pod_view_prefers_the_model_container_then_a_known_image() -> None:
    sidecar = {"name": "proxy", "image": "envoy:1"}
    model = {"name": "model", "image": IMAGE}
    other = {"name": "other", "image": IMAGE}
    assert view(containers=[sidecar, other, model]).container == "model"
    assert view(containers=[sidecar, other]).container == "other"
    unknown = view(containers=[sidecar])
    assert (unknown.container, unknown.known) == ("proxy", False)


def test_fallback_pods_are_named_by_their_fallback_label() -> None:
    fallback = pod("churn-fallback-1")
    fallback["metadata"]["labels"] = {LABEL_FALLBACK: "churn"}
    seen = pod_view(fallback, IMAGES)
    assert seen is not None
    assert (seen.md_name, seen.revision) == ("churn", "")


def test_objects_that_are_not_model_pods_have_no_view() -> None:
    unlabelled = pod()
    unlabelled["metadata"]["labels"] = {}
    assert pod_view(unlabelled, IMAGES) is None
    assert pod_view(pod(containers=[]), IMAGES) is None


@pytest.mark.parametrize(
    ("kwargs", "reflect", "expected"),
    [
        ({}, True, True),
        ({"ready": False}, True, True),  # the runner owns readiness: Running is enough
        ({"ready": False}, False, False),  # else kwok's Ready is the trigger
        ({}, False, True),
        ({"phase": "Pending"}, True, False),
        ({"deleting": True}, True, False),
        ({"image": "registry.example/unknown:1"}, True, False),
    ],
)
def test_wanted(kwargs: dict[str, Any], reflect: bool, expected: bool) -> None:
    assert wanted(view(**kwargs), reflect) is expected


# --- process plan -------------------------------------------------------------------------


def test_plan_starts_new_pods_and_stops_gone_ones() -> None:
    a, b = view(name="a"), view(name="b")
    gone = PodKey("ml", "gone", "uid-gone")
    plan = plan_processes([a, b], {a.key: IMAGE, gone: IMAGE}, 10, True)
    assert [v.key for v in plan.start] == [b.key]
    assert plan.stop == [gone]
    assert plan.refused == []


def test_plan_restarts_a_pod_whose_image_changed_and_stops_terminating_ones() -> None:
    a, b = view(name="a"), view(name="b", deleting=True)
    plan = plan_processes([a, b], {a.key: "old-image", b.key: IMAGE}, 10, True)
    assert plan.stop == [a.key, b.key]
    assert [v.key for v in plan.start] == [a.key]


def test_plan_refuses_pods_beyond_the_limit_in_a_stable_order() -> None:
    views = [view(name=n) for n in ("d", "b", "a", "c")]
    plan = plan_processes(views, {views[0].key: IMAGE}, 3, True)  # "d" already runs
    assert [v.key.name for v in plan.start] == ["a", "b"]
    assert [v.key.name for v in plan.refused] == ["c"]
    assert plan.stop == []


# --- readiness and targets ----------------------------------------------------------------


NOW = "2026-11-21T10:00:00Z"


def test_status_patch_sets_both_conditions_and_the_container_flag() -> None:
    patch = status_patch("model", ContainerReport(False, "warming"), NOW)
    conditions = patch["status"]["conditions"]
    assert [x["type"] for x in conditions] == ["Ready", "ContainersReady"]
    assert all(x["status"] == "False" and x["reason"] == NOT_READY_REASON for x in conditions)
    [container] = patch["status"]["containerStatuses"]
    assert (container["name"], container["ready"], container["restartCount"]) == ("model", False, 0)
    assert container["state"] == {
        "waiting": {"reason": "ContainerCreating"}, "running": None, "terminated": None,
    }  # fmt: skip
    assert "lastState" not in container
    ready = status_patch("model", ContainerReport(True, "x" * 900, started_at=NOW), NOW)
    assert ready["status"]["conditions"][0]["reason"] == READY_REASON
    assert len(ready["status"]["conditions"][0]["message"]) == 500
    [running] = ready["status"]["containerStatuses"]
    assert running["state"] == {"running": {"startedAt": NOW}, "waiting": None, "terminated": None}
    assert running["started"] is True


def test_status_patch_reports_a_crash_loop_as_a_kubelet_would() -> None:
    report = ContainerReport(
        False, "back-off", ("CrashLoopBackOff", "back-off 4s restarting failed container=model"),
        restarts=3, last_exit_code=1, last_exit_message="cannot load /model",
    )  # fmt: skip
    [container] = status_patch("model", report, NOW)["status"]["containerStatuses"]
    assert container["restartCount"] == 3
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert container["state"]["running"] is None
    terminated = container["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (1, "Error")
    assert terminated["message"] == "cannot load /model"


GOLDEN_FAILED = b"golden request failed: golden-0: output 'label'[0] is 'stay', expected 'churn'"
CRASH_LOG = b"".join(f"line {i}\n".encode() for i in range(200)) + b"ImportError: no sklearn\n"


@pytest.mark.parametrize(
    ("written", "policy", "code", "message"),
    [
        (GOLDEN_FAILED, "File", 4, GOLDEN_FAILED.decode()),
        (GOLDEN_FAILED, "FallbackToLogsOnError", 4, GOLDEN_FAILED.decode()),  # the file first
        (b"", "File", 1, ""),  # nothing written, no fallback: the kubelet says nothing
        (b"", "FallbackToLogsOnError", 0, ""),  # logs only after a failed exit
        (b"x" * 5000, "File", 1, "x" * 4096),
    ],
    ids=["file", "file-over-logs", "file-empty", "clean-exit", "file-cut"],
)
def test_termination_message_as_a_kubelet_reads_it(
    written: bytes, policy: str, code: int, message: str
) -> None:
    assert termination_message(written, CRASH_LOG, policy, code) == message


def test_termination_message_falls_back_to_the_logs_last_80_lines_at_most_2048_bytes() -> None:
    fallback = termination_message(b"", CRASH_LOG, FALLBACK_TO_LOGS, 1)
    assert fallback.endswith("line 199\nImportError: no sklearn\n")
    assert fallback.splitlines()[0] == "line 121"  # 80 lines
    long_lines = b"".join(b"y" * 100 + b"\n" for _ in range(80))
    assert len(termination_message(b"", long_lines, FALLBACK_TO_LOGS, 1)) == 2048


def test_pod_view_reads_the_termination_message_path_and_policy() -> None:
    default = view()
    assert (default.termination_message_path, default.termination_message_policy) == (
        "/dev/termination-log", "File",
    )  # fmt: skip
    container = {
        "name": "model", "image": IMAGE, "terminationMessagePath": "/tmp/why",
        "terminationMessagePolicy": FALLBACK_TO_LOGS,
    }  # fmt: skip
    seen = view(containers=[container])
    assert (seen.termination_message_path, seen.termination_message_policy) == (
        "/tmp/why", FALLBACK_TO_LOGS,
    )  # fmt: skip


def test_container_mode_serves_only_images_on_a_loopback_registry() -> None:
    digest = "@sha256:" + "b" * 64
    images = ContainerImages()
    assert f"127.0.0.1:5000/ml/churn{digest}" in images
    assert "localhost:41234/ml/churn:1" in images
    for elsewhere in (IMAGE, "10.0.0.5:5000/ml/churn:1", "churn:1", "127.0.0.1/ml/churn:1",
                      "127.0.0.1:5000/ml/churn:1 --privileged"):  # fmt: skip
        assert not on_loopback_registry(elsewhere)
        assert elsewhere not in images


def test_container_run_argv_host_network_own_port_restricted() -> None:
    image = "127.0.0.1:5000/ml/churn@sha256:" + "c" * 64
    argv = ContainerLaunch(image).run_argv(
        "md-ml-churn-1", 41000, {c.ENV_MODEL_NAME: "churn", c.ENV_SERVE_PORT: "8080"}, "lbl"
    )
    assert argv[:2] == ["podman", "run"]
    assert argv[-1] == image
    pairs = list(itertools.pairwise(argv))
    flags = [("--network", "host"), ("--cap-drop", "ALL"), ("--pull=missing", "--tls-verify=false")]
    for flag in flags:
        assert flag in pairs
    assert "--read-only" in argv
    env = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-e"]
    # The runner's port wins over the pod's own (the pod's containerPort is 8080 for all).
    assert f"{c.ENV_SERVE_PORT}=41000" in env
    assert f"{c.ENV_SERVE_PORT}=8080" not in env
    assert f"{c.ENV_SERVE_HOST}=127.0.0.1" in env
    assert f"{c.ENV_MODEL_NAME}=churn" in env
    assert "--volume" not in argv
    mounted = ContainerLaunch(image).run_argv(
        "md-ml-churn-1",
        41000,
        {},
        "lbl",
        (Path("/state/termination/ml_p.log"), "/dev/termination-log"),
    )
    assert ("--volume", "/state/termination/ml_p.log:/dev/termination-log") in itertools.pairwise(
        mounted
    )


def test_container_names_are_valid_and_unique_per_pod() -> None:
    name = container_name("ml", "churn-7d9f/x" + "y" * 100, "0123456789abcdef")
    assert name.startswith("md-ml-churn-7d9f-x")
    assert name.endswith("-01234567")
    assert len(name) <= 100
    assert container_name("ml", "p", "aaaaaaaa1") != container_name("ml", "p", "bbbbbbbb1")


def test_target_labels_never_clash_with_the_runtimes_own_labels() -> None:
    labels = target_labels(view())
    assert labels == {"namespace": "ml", "pod": "churn-abc-1", "md_name": "churn"}
    assert not set(labels) & {*c.IDENTITY_LABELS, c.LABEL_CODE, "job", "instance"}


def test_service_members_are_the_served_pods_its_selector_picks() -> None:
    a, b = view(name="a"), view(name="b")
    other_ns = pod_view({**pod("c"), "metadata": {**pod("c")["metadata"], "namespace": "dev"}},
                        IMAGES)  # fmt: skip
    assert other_ns is not None

    def svc(name: str, selector: dict[str, str] | None) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "ml"}, "spec": {"selector": selector}}

    members = service_members(
        [
            svc("churn", {LABEL_NAME: "churn"}),
            svc("churn-stable", {LABEL_NAME: "churn", LABEL_REVISION: "abc"}),
            svc("churn-canary", {LABEL_NAME: "churn", LABEL_REVISION: "def"}),
            svc("external", None),
        ],
        [b, a, other_ns],
    )
    assert [(m.name, m.pods) for m in members] == [
        ("churn", ("a", "b")),
        ("churn-canary", ()),
        ("churn-stable", ("a", "b")),
    ]
