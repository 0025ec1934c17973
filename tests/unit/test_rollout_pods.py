"""Pods that cannot start: what a kubelet's pod status says (observe), and what the machine
does with it (roll the canary back when certain, report the rest once)."""

from datetime import datetime, timedelta
from typing import Any

import pytest
from test_rollout_machine import NAME, UID, V2, Driver, rev, stable_driver

from modeldeploy.api import MAX_POD_PROBLEMS, to_wire
from modeldeploy.resources.names import LABEL_NAME, LABEL_REVISION
from modeldeploy.rollout import observe
from modeldeploy.rollout.machine import CRASH_RESTART_LIMIT, READINESS_GRACE
from modeldeploy.rollout.podstatus import observe_pod

pytestmark = pytest.mark.unit

PULL_MESSAGE = 'Back-off pulling image "registry.example/churn@sha256:222"'


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def kubelet_pod(
    revision: str,
    name: str,
    *,
    state: dict[str, Any] | None = None,
    last: dict[str, Any] | None = None,
    restarts: int = 0,
    ready: bool = False,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Pod of a revision with one container `model`, as its kubelet reports it."""
    container: dict[str, Any] = {
        "name": "model",
        "ready": ready,
        "restartCount": restarts,
        "state": state or {"running": {"startedAt": "2026-11-20T12:00:00Z"}},
    }
    if last is not None:
        container["lastState"] = last
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {LABEL_NAME: NAME, LABEL_REVISION: revision},
            "ownerReferences": [{"kind": "ReplicaSet", "uid": "rs", "controller": True}],
        },
        "status": {
            "phase": "Running" if conditions is None else "Pending",
            "conditions": conditions or [],
            "containerStatuses": [container],
        },
    }


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"waiting": {"reason": reason, "message": message}}


def oom_killed() -> dict[str, Any]:
    return {"terminated": {"reason": "OOMKilled", "exitCode": 137}}


UNSCHEDULABLE = [
    {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity.",
    }
]


def one_problem(body: dict[str, Any]) -> tuple[str, str, int]:
    notes: list[str] = []
    pod = observe_pod(body, notes)
    assert pod is not None
    assert not notes
    (problem,) = pod.problems
    return problem.reason, problem.message, problem.restarts


# --- observe: the kubelet's words -----------------------------------------------------------


@pytest.mark.parametrize(
    "reason",
    [
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
    ],
)
def test_waiting_reasons_are_problems(reason: str) -> None:
    body = kubelet_pod("r", "p", state=waiting(reason, "why"))
    assert one_problem(body) == (reason, "why", 0)


def test_crash_loop_says_how_the_container_last_ended() -> None:
    body = kubelet_pod(
        "r", "p", state=waiting("CrashLoopBackOff", "back-off 40s"), last=oom_killed(), restarts=3
    )
    assert one_problem(body) == (
        "CrashLoopBackOff", "last exit: OOMKilled (exit code 137); back-off 40s", 3,
    )  # fmt: skip


GOLDEN_FAILED = "golden request failed: golden-0: output 'label'[0] is 'stay', expected 'churn'"
BACK_OFF = "back-off 40s restarting failed container=model pod=churn-x_ml(0c3b5a1e-5f0e-4b6a)"


def exited(message: str, code: int = 4) -> dict[str, Any]:
    return {"terminated": {"reason": "Error", "exitCode": code, "message": message}}


@pytest.mark.parametrize(
    ("message", "said"),
    [
        (GOLDEN_FAILED, GOLDEN_FAILED),  # the runtime's termination message
        # FallbackToLogsOnError: the log's end, whose last line says how a crash ended
        (
            "Traceback (most recent call last):\n  File ...\nImportError: no sklearn\n\n",
            "ImportError: no sklearn",
        ),
        ("  \n", ""),
    ],
    ids=["termination-message", "log-tail", "blank"],
)
def test_crash_loop_carries_the_containers_own_words(message: str, said: str) -> None:
    body = kubelet_pod(
        "r", "p", state=waiting("CrashLoopBackOff", BACK_OFF), last=exited(message), restarts=2
    )
    ended = f"last exit: Error (exit code 4): {said}" if said else "last exit: Error (exit code 4)"
    assert one_problem(body) == ("CrashLoopBackOff", f"{ended}; {BACK_OFF}", 2)


def test_a_long_termination_message_is_cut_the_back_off_first() -> None:
    body = kubelet_pod(
        "r", "p", state=waiting("CrashLoopBackOff", BACK_OFF), last=exited("x" * 4096)
    )
    _, message, _ = one_problem(body)
    assert len(message) == 256
    assert message.startswith("last exit: Error (exit code 4): xxx")
    assert message.endswith("x...")


def test_a_failed_profile_copy_is_the_init_containers_crash_loop_in_its_own_words() -> None:
    """An external server's image without the profile: the init container's `cp` fails, and
    the kubelet restarts it (restartPolicy Always) while the pod's containers wait in
    PodInitializing, which is no problem of theirs."""
    body = kubelet_pod("r", "p", state=waiting("PodInitializing"))
    cp_failed = "cp: cannot stat '/model/profile.json': No such file or directory\n"
    body["status"]["initContainerStatuses"] = [
        {
            "name": "copy-profile",
            "ready": False,
            "restartCount": 3,
            "state": waiting("CrashLoopBackOff", "back-off 40s"),
            "lastState": exited(cp_failed, code=1),
        }
    ]
    pod = observe_pod(body, [])
    assert pod is not None
    (problem,) = pod.problems
    assert (problem.container, problem.reason, problem.restarts) == (
        "copy-profile", "CrashLoopBackOff", 3,
    )  # fmt: skip
    assert problem.message == (
        "last exit: Error (exit code 1): cp: cannot stat '/model/profile.json': "
        "No such file or directory; back-off 40s"
    )


def test_oom_killed_counts_until_the_container_is_ready_again() -> None:
    assert one_problem(kubelet_pod("r", "p", state=oom_killed(), restarts=1))[0] == "OOMKilled"
    restarted = kubelet_pod("r", "p", last=oom_killed(), restarts=2)
    assert one_problem(restarted)[0] == "OOMKilled"
    # Running and ready: an OOM kill long ago is not a problem of today.
    healthy = kubelet_pod("r", "p", last=oom_killed(), restarts=2, ready=True)
    healthy["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    pod = observe_pod(healthy, [])
    assert pod is not None
    assert pod.problems == ()


def test_starting_containers_are_no_problem() -> None:
    body = kubelet_pod("r", "p", state=waiting("ContainerCreating"))
    pod = observe_pod(body, [])
    assert pod is not None
    assert pod.problems == ()


def test_unschedulable_carries_the_scheduler_message() -> None:
    body = kubelet_pod("r", "p", conditions=UNSCHEDULABLE)
    body["status"]["containerStatuses"] = []
    reason, message, _ = one_problem(body)
    assert (reason, message) == ("Unschedulable", UNSCHEDULABLE[0]["message"])


def test_not_ready_with_running_containers_says_why_and_since_when() -> None:
    ready = {
        "type": "Ready",
        "status": "False",
        "reason": "ModelNotServing",
        "message": "golden request 2: expected 1, got 0",
        "lastTransitionTime": "2026-11-20T12:00:00Z",
    }
    body = kubelet_pod("r", "p")
    body["status"]["conditions"] = [ready]
    pod = observe_pod(body, [])
    assert pod is not None
    (problem,) = pod.problems
    assert problem.reason == "NotReady"
    assert problem.message == "ModelNotServing: golden request 2: expected 1, got 0"
    assert pod.not_ready_since is not None
    assert stamp(pod.not_ready_since) == "2026-11-20T12:00:00Z"


def test_messages_are_truncated() -> None:
    body = kubelet_pod("r", "p", state=waiting("ErrImagePull", "x" * 10_000))
    _, message, _ = one_problem(body)
    assert len(message) == 256
    assert message.endswith("...")


def test_terminating_and_finished_pods_are_ignored() -> None:
    going = kubelet_pod("r", "p", state=waiting("CrashLoopBackOff"))
    going["metadata"]["deletionTimestamp"] = "2026-11-20T12:00:00Z"
    done = kubelet_pod("r", "q", state=waiting("CrashLoopBackOff"))
    done["status"]["phase"] = "Failed"
    assert observe_pod(going, []) is None
    assert observe_pod(done, []) is None


@pytest.mark.parametrize(
    "odd",
    [
        {"metadata": {"labels": {LABEL_REVISION: "r"}}},
        {"metadata": {"name": "p", "labels": {}}},
        {"metadata": {"name": "p", "labels": {LABEL_REVISION: "r"}}, "status": "broken"},
        {
            "metadata": {"name": "p", "labels": {LABEL_REVISION: "r"}},
            "status": {"containerStatuses": {"name": "model"}},
        },
        {
            "metadata": {"name": "p", "labels": {LABEL_REVISION: "r"}},
            "status": {"containerStatuses": ["model"]},
        },
    ],
    ids=["no-name", "no-revision", "status-string", "statuses-mapping", "statuses-strings"],
)
def test_odd_pods_are_notes_not_crashes(odd: dict[str, Any]) -> None:
    notes: list[str] = []
    observe_pod({"kind": "Pod", **odd}, notes)
    assert notes


def test_pods_count_only_for_revisions_whose_deployment_is_ours() -> None:
    d = stable_driver()
    d.cluster.pods["churn-x-1"] = kubelet_pod("someone-else", "churn-x-1", state=waiting("X"))
    d.cluster.pods["churn-r-1"] = kubelet_pod(rev(), "churn-r-1", state=waiting("ErrImagePull"))
    world = observe(UID, [*d.cluster.objects.values(), *d.cluster.pods.values()])
    assert [p.name for p in world.pods] == ["churn-r-1"]


# --- the machine: certain -> roll back, uncertain -> report once -------------------------------


def rolling_out() -> tuple[Driver, str]:
    """A stable churn with a canary of V2 whose pods do not turn Ready."""
    d = stable_driver()
    r2 = rev(V2)
    d.cluster.unready[f"churn-{r2}"] = 0
    d.change(image=V2)
    d.reconcile()
    assert d.status.canary_revision == r2
    return d, r2


def canary_pod(d: Driver, r2: str, **status: Any) -> str:
    name = f"churn-{r2}-5f7b9c-x2k4q"
    d.cluster.pods[name] = kubelet_pod(r2, name, **status)
    return name


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"])
def test_unpullable_canary_image_rolls_back_at_once(reason: str) -> None:
    d, r2 = rolling_out()
    pod = canary_pod(d, r2, state=waiting(reason, PULL_MESSAGE))
    result = d.reconcile()
    why = f"pods cannot start: {pod}: {reason}: {PULL_MESSAGE}"
    assert d.phase() == "RolledBack"
    assert d.status.failed_revision == r2
    assert d.status.canary_revision is None
    assert d.status.history[-1].event == "RolledBack"
    assert d.status.history[-1].reason == why
    rolled_back = [e for e in result.events if e.reason == "RolledBack"]
    assert len(rolled_back) == 1
    assert rolled_back[0].type == "Warning"
    assert why in rolled_back[0].message
    assert d.condition("Degraded") == ("True", "PodsFailing")
    degraded = next(c for c in d.status.conditions if c.type == "Degraded")
    assert why in degraded.message
    assert d.condition("Stalled") == ("True", "PodsFailing")  # kstatus: Failed
    assert f"churn-{r2}" not in d.cluster.deployments()
    assert "PodProblem" not in d.events()  # the rollback says it; the canary is gone


def test_a_lone_err_image_pull_is_reported_once_then_backoff_rolls_back() -> None:
    d, r2 = rolling_out()
    pod = canary_pod(d, r2, state=waiting("ErrImagePull", "rpc error: not found"))
    for _ in range(5):
        d.reconcile()
    assert d.phase() == "Progressing"
    (problem,) = d.status.pod_problems
    assert (problem.revision, problem.pod, problem.reason) == (r2, pod, "ErrImagePull")
    progressing = next(c for c in d.status.conditions if c.type == "Progressing")
    assert f"{pod}: ErrImagePull: rpc error: not found" in progressing.message
    assert d.events().count("PodProblem") == 1
    canary_pod(d, r2, state=waiting("ImagePullBackOff", PULL_MESSAGE))
    d.reconcile()
    assert d.phase() == "RolledBack"
    assert d.status.pod_problems == []


@pytest.mark.parametrize(
    "status",
    [
        {"state": waiting("CrashLoopBackOff", "back-off 40s restarting failed container")},
        {"state": oom_killed()},
        {"state": waiting("CrashLoopBackOff", "back-off 40s"), "last": oom_killed()},
    ],
    ids=["crash-loop", "oom-killed", "crash-loop-after-oom"],
)
def test_crashing_canary_rolls_back_at_the_restart_limit(status: dict[str, Any]) -> None:
    d, r2 = rolling_out()
    for restarts in range(1, CRASH_RESTART_LIMIT):
        canary_pod(d, r2, restarts=restarts, **status)
        d.reconcile()
        assert d.phase() == "Progressing", restarts
        assert d.status.pod_problems[0].restarts == restarts
    assert d.events().count("PodProblem") == 1  # one problem, restarting: one Event
    pod = canary_pod(d, r2, restarts=CRASH_RESTART_LIMIT, **status)
    d.reconcile()
    assert d.phase() == "RolledBack"
    reason = d.status.history[-1].reason
    assert reason.startswith(f"pods cannot start: {pod}: ")
    assert reason.endswith(f"({CRASH_RESTART_LIMIT} restarts)")


@pytest.mark.parametrize(
    "status",
    [
        {"conditions": UNSCHEDULABLE},
        {"state": waiting("CreateContainerConfigError", 'secret "token" not found')},
        {"state": waiting("CreateContainerError", "context deadline exceeded")},
    ],
    ids=["unschedulable", "config-error", "create-error"],
)
def test_uncertain_problems_are_reported_not_rolled_back(status: dict[str, Any]) -> None:
    d, r2 = rolling_out()
    canary_pod(d, r2, **status)
    d.run(20)
    assert d.phase() == "Progressing"
    assert d.status.canary_revision == r2
    assert len(d.status.pod_problems) == 1
    assert d.condition("Progressing") == ("True", "WarmingUp")
    assert d.events().count("PodProblem") == 1
    (event,) = [e for p in d.plans for e in p.events if e.reason == "PodProblem"]
    assert event.type == "Warning"
    assert event.message.startswith(f"canary {r2}: churn-{r2}-")


def test_not_ready_is_reported_after_a_grace_period_only() -> None:
    d, r2 = rolling_out()
    pod = canary_pod(d, r2)
    d.cluster.pods[pod]["status"]["conditions"] = [
        {
            "type": "Ready",
            "status": "False",
            "reason": "ModelNotServing",
            "message": "golden request 1 failed",
            "lastTransitionTime": stamp(d.now),
        }
    ]
    d.run(int(READINESS_GRACE.total_seconds()) - 2)
    assert d.status.pod_problems == []  # warming up
    d.run(3)
    assert [p.reason for p in d.status.pod_problems] == ["NotReady"]
    assert d.phase() == "Progressing"
    assert d.events().count("PodProblem") == 1


def test_changing_messages_and_an_operator_restart_post_no_new_event() -> None:
    d, r2 = rolling_out()
    canary_pod(d, r2, state=waiting("CrashLoopBackOff", "back-off 10s"), restarts=1)
    d.reconcile()
    canary_pod(d, r2, state=waiting("CrashLoopBackOff", "back-off 20s"), restarts=2)
    d.reconcile()
    # A restarted operator knows only status (the driver keeps nothing else).
    status = to_wire(d.status)
    d.reconcile()
    assert to_wire(d.status) == status
    assert d.events().count("PodProblem") == 1
    # Another pod with a problem is new: one more Event, about it alone.
    other = f"churn-{r2}-5f7b9c-zz9zz"
    d.cluster.pods[other] = kubelet_pod(r2, other, conditions=UNSCHEDULABLE)
    result = d.reconcile()
    (event,) = [e for e in result.events if e.reason == "PodProblem"]
    assert other in event.message
    assert "CrashLoopBackOff" not in event.message


def test_stable_pod_problems_degrade_but_never_roll_back() -> None:
    d = stable_driver()
    r1 = rev()
    name = f"churn-{r1}-abc-1"
    d.cluster.pods[name] = kubelet_pod(
        r1, name, state=waiting("CrashLoopBackOff", "back-off 5m0s"), restarts=12
    )
    d.run(10)
    assert d.phase() == "Stable"
    assert d.status.stable_revision == r1
    assert d.condition("Degraded") == ("True", "CrashLoopBackOff")
    assert d.condition("Stalled") == ("False", "NotStalled")
    assert d.events().count("PodProblem") == 1
    # ... also while a canary rolls out: the canary carries on.
    d.change(image=V2)
    d.run(5)
    assert d.status.canary_revision == rev(V2)
    assert d.status.failed_revision is None
    assert d.events().count("PodProblem") == 1
    # Fixed: nothing listed, Degraded clears, no Event about it.
    del d.cluster.pods[name]
    d.reconcile()
    assert d.status.pod_problems == []
    assert d.condition("Degraded") == ("False", "AsExpected")


def test_first_revision_that_cannot_pull_is_degraded_with_the_kubelet_reason() -> None:
    d = Driver()
    r1 = rev()
    d.cluster.unready[f"churn-{r1}"] = 0
    d.reconcile()
    d.cluster.pods["churn-p"] = kubelet_pod(r1, "churn-p", state=waiting("ImagePullBackOff"))
    d.reconcile()
    assert d.phase() == "Pending"  # nothing to roll back to
    assert d.condition("Degraded") == ("True", "ImagePullBackOff")


def test_status_lists_a_bounded_number_of_problems_canary_first() -> None:
    d, r2 = rolling_out()
    for i in range(MAX_POD_PROBLEMS + 5):
        name = f"churn-{r2}-p{i:02d}"
        d.cluster.pods[name] = kubelet_pod(r2, name, conditions=UNSCHEDULABLE)
    stable = f"churn-{rev()}-s"
    d.cluster.pods[stable] = kubelet_pod(rev(), stable, conditions=UNSCHEDULABLE)
    d.run(3)
    assert len(d.status.pod_problems) == MAX_POD_PROBLEMS
    assert {p.revision for p in d.status.pod_problems} == {r2}
    assert d.events().count("PodProblem") == 1  # what status cannot list is never "new"


def test_idle_with_a_problem_writes_nothing_more() -> None:
    d = stable_driver()
    r1 = rev()
    d.cluster.pods["churn-q"] = kubelet_pod(r1, "churn-q", conditions=UNSCHEDULABLE)
    d.reconcile()
    status = to_wire(d.status)
    for _ in range(5):
        result = d.reconcile(after=timedelta(minutes=3))
        assert not result.events
        assert to_wire(result.status) == status
