"""The Kubernetes executor with the real `kubernetes` client against kmock's API emulator (tests/support/kube.py): the
Job it creates, what it reads back from Jobs and pods in every state a scheduler and kubelet can put them in, and the
agent end to end, with the test playing the kubelet: it runs the Job's own command when the Job appears.

What is not tested here: a real scheduler and kubelet (no cluster runs on these machines), Kueue's own admission."""

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import kmock
import pytest

from corral_runner.executors.base import Submission, job_name
from corral_runner.executors.kubernetes import ATTEMPT_LABEL, RUNNER_LABEL, Kubernetes, KubernetesError
from corral_runner.executors.settings import KubernetesExecutor
from corral_runner.jobdir import JobDirectory
from corral_runner.protocol import JobPlacement
from corral_runner.tiny import build_tiny_llama
from tests.support.cluster import SERVER_SETTINGS, TEST_GPU, ClusterRunner, wait_for
from tests.support.kube import GPU_LABEL, NAMESPACE, KubeAPI, running_api
from tests.support.server import OFFLINE, ROOT, Server

GIB = 2**30
H100 = {"kind": "nvidia-h100-80gb", "memory_bytes": 80 * GIB}
L4 = {"kind": "nvidia-l4", "memory_bytes": 24 * GIB}
HF_SECRET_VALUE = "hf_secretvalueoftherunner0123456789"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubeAPI]:
    with running_api(tmp_path) as running:
        yield running


def settings(api: KubeAPI, tmp_path: Path, **more: Any) -> KubernetesExecutor:
    return KubernetesExecutor.model_validate(
        {
            "kind": "kubernetes",
            "work_dir": str(tmp_path / "shared"),
            "namespace": NAMESPACE,
            "image": "registry.example/corral-runner:1.0",
            "volume_claim": "corral-work",
            "kubeconfig": str(api.kubeconfig),
            "gpu_kinds": {"NVIDIA-H100-80GB-HBM3": H100, "NVIDIA-L4": L4},
            "time_limit_minutes": 90,
        }
        | more
    )


def aid(name: str) -> uuid.UUID:
    """A test attempt's id, named for reading ("a1" is the first one)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"corral-test/{name}")


def named(name: str) -> str:
    return f"corral-{aid(name)}"


def submission(tmp_path: Path, attempt: str = "a1", tensor_parallel: int = 2, required: int = 100 * GIB) -> Submission:
    return Submission(
        attempt_id=aid(attempt),
        directory=JobDirectory(tmp_path / "shared" / str(aid(attempt))),
        placement=JobPlacement(tensor_parallel=tensor_parallel),
        gpus_per_node=tensor_parallel,
        env={"HF_TOKEN": HF_SECRET_VALUE, "HF_HOME": "/shared/hf", "PATH": "/usr/bin", "PYTHONUNBUFFERED": "1"},
        required_memory_bytes=required,
    )


def test_the_job_runs_lm_eval_once_on_the_gpus_it_was_placed_on_with_its_secret_referenced(
    api: KubeAPI, tmp_path: Path
) -> None:
    engine = Kubernetes(settings(api, tmp_path, hf_token_secret="hf-token", queue="gpu-queue"), "runner-1")
    submitted = engine.submit(submission(tmp_path))
    assert submitted.ref == f"k8s:{NAMESPACE}/{named('a1')}"
    assert submitted.phase == "pending"

    job = api.get("batch/v1/jobs", named("a1"))
    assert job is not None
    labels = job["metadata"]["labels"]
    assert labels[RUNNER_LABEL] == "runner-1"
    assert labels[ATTEMPT_LABEL] == str(aid("a1"))
    assert labels["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    spec = job["spec"]
    assert spec["suspend"] is True  # Kueue admits it
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 90 * 60
    assert spec["ttlSecondsAfterFinished"] > 0
    rule = spec["podFailurePolicy"]["rules"][0]
    assert rule == {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"][ATTEMPT_LABEL] == str(aid("a1"))
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    [container] = pod["containers"]
    assert container["image"] == "registry.example/corral-runner:1.0"
    assert container["command"] == [
        "python",
        "-m",
        "corral_runner.cluster_job",
        str(tmp_path / "shared" / str(aid("a1")) / "spec.json"),
    ]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    # Its own directory of the shared volume only: no other job's spec, log or results.
    assert mounts == {"work": str(tmp_path / "shared" / str(aid("a1"))), "dshm": "/dev/shm"}
    [work] = [mount for mount in container["volumeMounts"] if mount["name"] == "work"]
    assert work["subPath"] == str(aid("a1"))
    # Nothing lm-eval runs can gain privileges in the pod.
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["work"]["persistentVolumeClaim"] == {"claimName": "corral-work"}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    env = {entry["name"]: entry for entry in container["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}},
    }
    assert env["HF_HOME"]["value"] == "/shared/hf"
    assert "PATH" not in env  # the agent's environment is not the image's
    # 100 GiB over 2 GPUs: only the H100 nodes hold it, and the scheduler is told so.
    [term] = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": GPU_LABEL, "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}]
    # The token's value went to the API server in no request, and the runner's own bearer token only in headers.
    for request in api.requests():
        assert HF_SECRET_VALUE not in request.text
        assert "kube-bearer-token-of-the-runner" not in request.text


def test_the_hub_token_secret_reaches_only_jobs_whose_weights_may_need_it(api: KubeAPI, tmp_path: Path) -> None:
    engine = Kubernetes(settings(api, tmp_path, hf_token_secret="hf-token", run_as_user=1000), "runner-1")
    public = submission(tmp_path, attempt="p1")
    engine.submit(replace(public, needs_hub_token=False, env={"PYTHONUNBUFFERED": "1"}))
    engine.submit(submission(tmp_path, attempt="g1"))

    def container(name: str) -> dict[str, Any]:
        job = api.get("batch/v1/jobs", name)
        assert job is not None
        [found] = job["spec"]["template"]["spec"]["containers"]
        return dict(found)

    assert "HF_TOKEN" not in {entry["name"] for entry in container(named("p1"))["env"]}
    assert "HF_TOKEN" in {entry["name"] for entry in container(named("g1"))["env"]}
    assert container(named("g1"))["securityContext"]["runAsUser"] == 1000
    assert container(named("g1"))["securityContext"]["runAsNonRoot"] is True


def test_a_second_submit_adopts_the_job_and_a_stranger_of_that_name_is_refused(api: KubeAPI, tmp_path: Path) -> None:
    engine = Kubernetes(settings(api, tmp_path), "runner-1")
    first = engine.submit(submission(tmp_path))
    again = engine.submit(submission(tmp_path))
    assert again.ref == first.ref
    assert list(api.jobs()) == [named("a1")]

    api.put("batch/v1/jobs", named("b2"), {"metadata": {"labels": {RUNNER_LABEL: "runner-1", ATTEMPT_LABEL: "zz"}}})
    with pytest.raises(KubernetesError, match="not this attempt's"):
        engine.submit(submission(tmp_path, attempt="b2"))


def test_only_this_runners_jobs_are_listed_and_the_selector_is_sent(api: KubeAPI, tmp_path: Path) -> None:
    mine = Kubernetes(settings(api, tmp_path), "runner-1")
    theirs = Kubernetes(settings(api, tmp_path), "runner-2")
    mine.submit(submission(tmp_path, attempt="a1"))
    theirs.submit(submission(tmp_path, attempt="b1"))
    api.put("batch/v1/jobs", "unrelated", {"metadata": {"labels": {"app": "web"}}})
    assert set(mine.jobs()) == {named("a1")}
    assert set(theirs.jobs()) == {named("b1")}
    listings = [
        request
        for request in api.requests()
        if request.action == kmock.action.LIST and request.resource and request.resource.plural == "jobs"
    ]
    selectors = {request.params.get("labelSelector") for request in listings}
    assert selectors == {f"{RUNNER_LABEL}=runner-1", f"{RUNNER_LABEL}=runner-2"}


def container(state: dict[str, Any]) -> dict[str, Any]:
    """A container status as the kubelet writes it (the client refuses one without its required fields)."""
    return {"name": "lm-eval", "image": "i", "imageID": "", "ready": False, "restartCount": 0, "state": state}


def job_state(api: KubeAPI, engine: Kubernetes) -> tuple[str, str]:
    job = engine.jobs()[job_name(aid("a1"))]
    return job.phase, job.reason


def test_every_state_a_job_and_its_pod_can_be_in_reads_as_the_agent_needs(api: KubeAPI, tmp_path: Path) -> None:
    engine = Kubernetes(settings(api, tmp_path), "runner-1")
    engine.submit(submission(tmp_path))
    job = api.get("batch/v1/jobs", named("a1"))
    assert job is not None
    assert job_state(api, engine) == ("pending", "no pod yet")

    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/4 nodes"}
    pod = api.pod(job, phase="Pending", conditions=[unschedulable])
    assert job_state(api, engine) == ("pending", "Unschedulable: 0/4 nodes")

    waiting = container({"waiting": {"reason": "ImagePullBackOff", "message": "back-off"}})
    api.set_status("v1/pods", pod, {"phase": "Pending", "containerStatuses": [waiting]})
    assert job_state(api, engine) == ("pending", "ImagePullBackOff")

    hopeless = container({"waiting": {"reason": "InvalidImageName", "message": "bad ref"}})
    api.set_status("v1/pods", pod, {"phase": "Pending", "containerStatuses": [hopeless]})
    assert job_state(api, engine) == ("failed", "InvalidImageName: bad ref")

    api.set_status("v1/pods", pod, {"phase": "Running"})
    api.set_status("batch/v1/jobs", named("a1"), {"active": 1, "startTime": "2026-12-03T10:00:00Z"})
    assert job_state(api, engine) == ("running", "")

    def condition(kind: str, reason: str, message: str = "") -> dict[str, Any]:
        return {"conditions": [{"type": kind, "status": "True", "reason": reason, "message": message}]}

    api.set_status("batch/v1/jobs", named("a1"), condition("Complete", "CompletionsReached"))
    assert job_state(api, engine)[0] == "succeeded"
    api.set_status("batch/v1/jobs", named("a1"), condition("Failed", "DeadlineExceeded", "Job was active longer"))
    assert job_state(api, engine) == ("failed", "DeadlineExceeded: Job was active longer")
    disrupted = f"Container lm-eval for pod evals/{named('a1')}-x1 failed with DisruptionTarget condition"
    api.set_status("batch/v1/jobs", named("a1"), condition("Failed", "PodFailurePolicy", disrupted))
    assert job_state(api, engine)[0] == "preempted"

    api.put("v1/pods", pod, {"metadata": {"labels": {}}})  # the pod is gone
    api.set_status("batch/v1/jobs", named("a1"), {}, suspend=True)
    assert job_state(api, engine) == ("pending", "waiting for admission (suspended)")
    api.set_status("batch/v1/jobs", named("a1"), {"startTime": "2026-12-03T10:00:00Z"}, suspend=True)
    assert job_state(api, engine) == ("preempted", "suspended by its queue after it started")


def test_cancel_deletes_the_job_with_its_pods_and_a_deleted_job_is_gone(api: KubeAPI, tmp_path: Path) -> None:
    engine = Kubernetes(settings(api, tmp_path), "runner-1")
    submitted = engine.submit(submission(tmp_path))
    engine.cancel(submitted)
    assert api.get("batch/v1/jobs", named("a1")) is None
    [delete] = [request for request in api.requests() if request.action == kmock.action.DELETE]
    sent = json.loads(delete.text) if delete.text else {}
    assert "Background" in (delete.params.get("propagationPolicy"), sent.get("propagationPolicy"))
    assert engine.find(submitted, JobDirectory(tmp_path)).phase == "gone"
    engine.cancel(submitted)  # already gone: no error


def test_last_words_tell_how_the_pod_ended_and_the_end_of_its_log(api: KubeAPI, tmp_path: Path) -> None:
    engine = Kubernetes(settings(api, tmp_path), "runner-1")
    submitted = engine.submit(submission(tmp_path))
    job = api.get("batch/v1/jobs", named("a1"))
    assert job is not None
    killed = container({"terminated": {"reason": "OOMKilled", "exitCode": 137}})
    pod = api.pod(job, phase="Failed", containerStatuses=[killed])
    api.pod_log(pod, "loading checkpoint shards 3/4\n")
    words = engine.last_words(submitted, JobDirectory(tmp_path))
    assert f"pod {pod}: OOMKilled, exit code 137" in words
    assert "loading checkpoint shards 3/4" in words


def test_nodes_are_offered_by_shape_and_what_is_free_counts_the_pods_on_them(api: KubeAPI, tmp_path: Path) -> None:
    api.node("h1", "NVIDIA-H100-80GB-HBM3", 8, pool="gpu")
    api.node("h2", "NVIDIA-H100-80GB-HBM3", 8, pool="gpu")
    api.node("l1", "NVIDIA-L4", 4, pool="gpu")
    api.node("other", "NVIDIA-L4", 4, pool="batch")  # outside the node selector
    api.node("odd", "Tesla-K80", 2, pool="gpu")  # not in gpu_kinds
    engine = Kubernetes(settings(api, tmp_path, node_selector={"pool": "gpu"}), "runner-1")
    shapes = {(shape.kind, shape.count, shape.nodes) for shape in engine.node_shapes()}
    assert shapes == {("nvidia-h100-80gb", 8, 2), ("nvidia-l4", 4, 1)}

    busy = {"containers": [{"name": "x", "image": "y", "resources": {"limits": {"nvidia.com/gpu": "6"}}}]}
    api.put("v1/pods", "someone", {"spec": busy | {"nodeName": "h1"}, "status": {"phase": "Running"}}, "other-team")
    api.put("v1/pods", "done", {"spec": busy | {"nodeName": "h2"}, "status": {"phase": "Succeeded"}}, "other-team")
    cordoned = api.get("v1/nodes", "l1", namespace=None)
    assert cordoned is not None
    api.put("v1/nodes", "l1", cordoned | {"spec": {"unschedulable": True}}, namespace=None)
    free = {(shape.kind, shape.count, shape.nodes) for shape in engine.free_now()}
    assert free == {("nvidia-h100-80gb", 2, 1), ("nvidia-h100-80gb", 8, 1)}


def test_a_kubernetes_runner_spans_one_node_only() -> None:
    with pytest.raises(ValueError, match="max_nodes_per_job must be 1"):
        KubernetesExecutor.model_validate(
            {"work_dir": "/shared", "image": "i", "volume_claim": "v", "max_nodes_per_job": 2}
        )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path, **SERVER_SETTINGS)
    running.start()
    yield running
    running.stop()


def play_kubelet(api: KubeAPI, name: str, root: Path) -> subprocess.CompletedProcess[str]:
    """What a kubelet would do with the Job: a pod, running the container's own command and environment."""
    job = wait_for(lambda: api.get("batch/v1/jobs", name), f"the Job {name}")
    pod = api.pod(job, phase="Running")
    api.set_status("batch/v1/jobs", name, {"active": 1, "startTime": "2026-12-03T10:00:00Z"})
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {entry["name"]: entry.get("value", "") for entry in container.get("env", [])}
    command = [sys.executable if part == "python" else part for part in container["command"]]
    done = subprocess.run(
        command,
        cwd=container["workingDir"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)} | OFFLINE | env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    ended = "Complete" if done.returncode == 0 else "Failed"
    api.set_status("v1/pods", pod, {"phase": "Succeeded" if done.returncode == 0 else "Failed"})
    condition = {"type": ended, "status": "True", "reason": "CompletionsReached" if ended == "Complete" else "X"}
    api.set_status("batch/v1/jobs", name, {"conditions": [condition], "succeeded": int(done.returncode == 0)})
    return done


def test_the_agent_runs_the_smoke_suite_through_a_kubernetes_job(api: KubeAPI, server: Server, tmp_path: Path) -> None:
    api.node("gpu-1", "NVIDIA-TEST", 2)
    executor = {
        "kind": "kubernetes",
        "work_dir": str(tmp_path / "shared"),
        "namespace": NAMESPACE,
        "image": "corral-runner:test",
        "volume_claim": "corral-work",
        "kubeconfig": str(api.kubeconfig),
        "gpu_kinds": {"NVIDIA-TEST": TEST_GPU},
        "poll_seconds": 0.3,
        "settle_seconds": 1,
    }
    runner = ClusterRunner(server, tmp_path, executor, {})
    registered = runner.register(build_tiny_llama(tmp_path / "tiny"))
    assert registered["accelerators"] == [TEST_GPU | {"count": 2, "nodes": 1}]
    runner.start()
    try:
        evaluation = runner.evaluate()
        played: set[str] = set()

        def finished() -> dict[str, Any] | None:
            for name in sorted(set(api.jobs()) - played):  # every job of the evaluation, as the kubelet would
                played.add(name)
                done = play_kubelet(api, name, tmp_path)
                assert done.returncode == 0, done.stderr[-3000:]
            shown = runner.evaluation(evaluation["id"])
            return shown if shown["state"] in ("succeeded", "failed") else None

        shown = wait_for(finished, "the evaluation to finish", timeout=400)
        assert shown["state"] == "succeeded", runner.output()[-3000:]
        attempts = runner.attempts(evaluation["id"])
        assert {attempt["external_ref"] for attempt in attempts} == {
            f"k8s:{NAMESPACE}/{job_name(attempt['id'])}" for attempt in attempts
        }
        assert {job_name(attempt["id"]) for attempt in attempts} == played
        assert not any((tmp_path / "shared" / attempt["id"]).exists() for attempt in attempts)  # tidied away
    finally:
        runner.stop()
