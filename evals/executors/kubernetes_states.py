"""How a Kubernetes Job of an attempt stands, read from its conditions and its pods, in Corral's words."""

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from corral_runner.executors.base import Phase

# A pod waiting for one of these will wait for ever: the Job failed, and the reason told.
HOPELESS = {"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"}


def job_phase(job: client.V1Job, pods: list[client.V1Pod]) -> tuple[Phase, str]:
    """One Job's state from its conditions, its suspension and its pods (why a pod waits, how one ended)."""
    status = job.status or client.V1JobStatus()
    conditions = {condition.type: condition for condition in status.conditions or [] if condition.status == "True"}
    for kind in ("Complete", "SuccessCriteriaMet"):
        if kind in conditions:
            return "succeeded", kind
    for kind in ("Failed", "FailureTarget"):
        if kind in conditions:
            condition = conditions[kind]
            words = (
                f"{condition.reason or kind}: {condition.message}" if condition.message else condition.reason or kind
            )
            if condition.reason == "PodFailurePolicy" and "DisruptionTarget" in (condition.message or ""):
                return "preempted", words  # the pod was taken away (preemption, eviction, drain), not failed
            return "failed", words
    if job.spec is not None and job.spec.suspend:
        if status.start_time is not None or status.active:
            return "preempted", "suspended by its queue after it started"
        return "pending", "waiting for admission (suspended)"
    latest = [pod for pod in pods if pod_phase(pod) not in ("Succeeded", "Failed")]
    if any(pod_phase(pod) == "Running" for pod in latest):
        return "running", ""
    for pod in latest:
        waiting = _waiting_reason(pod)
        if waiting in HOPELESS:
            return "failed", f"{waiting}: {_waiting_message(pod)}"
        if waiting:
            return "pending", waiting
        for scheduled in (pod.status.conditions or []) if pod.status else []:
            if scheduled.type == "PodScheduled" and scheduled.status == "False":
                return "pending", f"{scheduled.reason or 'Unschedulable'}: {scheduled.message or ''}".strip(": ")
    if status.active:
        return "running", ""
    return "pending", "no pod yet"


def ended(pod: client.V1Pod) -> str:
    """A pod's end in words: the container's exit code and reason, or why the pod went."""
    statuses = (pod.status.container_statuses or []) if pod.status else []
    for container in statuses:
        terminated = container.state.terminated if container.state else None
        if terminated is not None:
            reason = terminated.reason or "Terminated"
            message = f" ({terminated.message.strip()[:300]})" if terminated.message else ""
            return f"{reason}, exit code {terminated.exit_code}{message}"
    status = pod.status
    if status is not None and (status.reason or status.message):
        return f"{status.reason or ''} {status.message or ''}".strip()
    return pod_phase(pod) or "unknown"


def _waiting_reason(pod: client.V1Pod) -> str:
    for container in (pod.status.container_statuses or []) if pod.status else []:
        if (
            container.state
            and container.state.waiting
            and container.state.waiting.reason not in (None, "ContainerCreating")
        ):
            return str(container.state.waiting.reason)
    return ""


def _waiting_message(pod: client.V1Pod) -> str:
    for container in (pod.status.container_statuses or []) if pod.status else []:
        if container.state and container.state.waiting and container.state.waiting.message:
            return str(container.state.waiting.message)[:300]
    return ""


def pod_phase(pod: client.V1Pod) -> str:
    return (pod.status.phase or "") if pod.status else ""


def labels_of(item: client.V1Job | client.V1Pod) -> dict[str, str]:
    return dict(item.metadata.labels or {}) if item.metadata else {}


def name_of(item: client.V1Job | client.V1Pod | client.V1Node) -> str:
    return (item.metadata.name or "") if item.metadata else ""


def said(exc: Exception) -> str:
    """What the API server said, without the request's headers (they carry the bearer token)."""
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}: {str(exc.body or '')[:500]}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"
