"""Kubernetes through the official client: one batch/v1 Job per attempt, named after it, labelled with the runner
that owns it. Two list calls per tick (Jobs, then their pods) tell every job's state, whatever their number.

The Job runs lm-eval once: no retries (backoffLimit 0), a pod disrupted by the cluster (preempted, node drained,
evicted) fails the Job through its pod failure policy and the agent hands the attempt back, and a Job that Kueue
suspends after it started is handed back too. Corral owns retries, as with Slurm's --no-requeue.
"""

import logging
from collections import defaultdict
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException, OpenApiException
from urllib3.exceptions import HTTPError

from evals.executors.base import ClusterJob, EngineError, NodeShape, Phase, Submission, job_name, shapes
from evals.executors.settings import KubernetesExecutor

log = logging.getLogger("corral.runner.kubernetes")

RUNNER_LABEL = "corral.dev/runner"
ATTEMPT_LABEL = "corral.dev/attempt"
MANAGED_BY = {"app.kubernetes.io/managed-by": "corral-runner"}
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
CONTAINER = "lm-eval"
REQUEST_SECONDS = 30
KEEP_FINISHED_SECONDS = 3600  # long past the agent's last look at a finished Job; then Kubernetes deletes it
# What the job's environment may carry from the agent's: never a credential (HF_TOKEN comes from a Secret).
PASSED_ENV = ("PYTHONUNBUFFERED", "TOKENIZERS_PARALLELISM", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_ENDPOINT")
# A pod waiting for one of these will wait for ever: the Job failed, and the reason told.
HOPELESS = {"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"}


# What a call to the API server can raise: refused, unreachable, or an answer the client's models reject.
API_ERRORS = (ApiException, HTTPError, OpenApiException, ValueError)


class KubernetesError(EngineError):
    """The API server is away or refused a request."""


def api_client(settings: KubernetesExecutor) -> client.ApiClient:
    """The kubeconfig named in the settings, else the pod's service account, else ~/.kube/config."""
    try:
        if settings.kubeconfig is not None:
            api: client.ApiClient = config.new_client_from_config(config_file=str(settings.kubeconfig))  # type: ignore[no-untyped-call]
            return api
        try:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return client.ApiClient(configuration)
        except config.ConfigException:
            api = config.new_client_from_config()  # type: ignore[no-untyped-call]
            return api
    except (config.ConfigException, OSError) as exc:
        raise KubernetesError(f"no Kubernetes credentials: {exc}") from exc


class Kubernetes:
    name = "Kubernetes"

    def __init__(self, settings: KubernetesExecutor, owner: str, api: client.ApiClient | None = None) -> None:
        self.settings = settings
        self.owner = owner
        api = api or api_client(settings)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.warned_of_token = False

    # -- what the cluster has -------------------------------------------------------------------------------------

    def _gpu_nodes(self) -> list[tuple[client.V1Node, str, int, int]]:
        """(node, kind, memory per GPU, GPUs) of each node the jobs may land on whose GPU is in gpu_kinds."""
        try:
            nodes = self.core.list_node(_request_timeout=REQUEST_SECONDS).items
        except API_ERRORS as exc:
            raise KubernetesError(f"listing nodes: {_said(exc)}") from exc
        found = []
        for node in nodes:
            labels = (node.metadata.labels or {}) if node.metadata else {}
            if any(labels.get(key) != value for key, value in self.settings.node_selector.items()):
                continue
            allocatable = (node.status.allocatable or {}) if node.status else {}
            count = int(allocatable.get(self.settings.gpu_resource, "0") or 0)
            kind = self.settings.gpu_kinds.get(labels.get(self.settings.gpu_product_label, ""))
            if kind is None:
                if count:
                    log.warning("node %s: GPU %r is not in gpu_kinds; it is not offered", _name(node), labels)
                continue
            found.append((node, kind.kind, kind.memory_bytes, count))
        return found

    def node_shapes(self) -> list[NodeShape]:
        return shapes([(kind, memory, count) for _node, kind, memory, count in self._gpu_nodes()])

    def free_now(self) -> list[NodeShape]:
        nodes = [entry for entry in self._gpu_nodes() if not (entry[0].spec and entry[0].spec.unschedulable)]
        try:
            pods = self.core.list_pod_for_all_namespaces(
                field_selector="status.phase!=Succeeded,status.phase!=Failed", _request_timeout=REQUEST_SECONDS
            ).items
        except API_ERRORS as exc:
            raise KubernetesError(f"listing pods: {_said(exc)}") from exc
        taken: dict[str, int] = defaultdict(int)
        for pod in pods:
            if pod.spec is None or not pod.spec.node_name or _pod_phase(pod) in ("Succeeded", "Failed"):
                continue
            for container in pod.spec.containers:
                limits = (container.resources.limits or {}) if container.resources else {}
                taken[pod.spec.node_name] += int(limits.get(self.settings.gpu_resource, "0") or 0)
        return shapes([(kind, memory, count - taken[_name(node)]) for node, kind, memory, count in nodes])

    # -- the jobs -----------------------------------------------------------------------------------------------------

    def manifest(self, job: Submission) -> client.V1Job:
        """The Job of one attempt; what it needs is on the volume, and its only secret is referenced."""
        settings = self.settings
        name = job_name(job.attempt_id)
        labels = {**MANAGED_BY, RUNNER_LABEL: self.owner, ATTEMPT_LABEL: job.attempt_id}
        job_labels = {**labels, KUEUE_QUEUE_LABEL: settings.queue} if settings.queue else labels
        env = [client.V1EnvVar(name=key, value=job.env[key]) for key in PASSED_ENV if key in job.env]
        if settings.hf_token_secret and job.needs_hub_token:  # only for weights that may need it
            secret = client.V1SecretKeySelector(name=settings.hf_token_secret, key="HF_TOKEN")
            env.append(client.V1EnvVar(name="HF_TOKEN", value_from=client.V1EnvVarSource(secret_key_ref=secret)))
        elif "HF_TOKEN" in job.env and not settings.hf_token_secret and not self.warned_of_token:
            self.warned_of_token = True
            log.warning(
                "the runner has an HF token but no hf_token_secret: the job runs without it (gated weights fail)"
            )
        gpus = {settings.gpu_resource: str(job.gpus_per_node)} if job.gpus_per_node else {}
        container = client.V1Container(
            name=CONTAINER,
            image=settings.image,
            command=[settings.python, "-m", "evals.cluster_job", str(job.job_dir / "spec.json")],
            working_dir=str(job.job_dir),
            env=env,
            resources=client.V1ResourceRequirements(limits=gpus or None, requests=gpus or None),
            volume_mounts=[
                # Its own directory of the shared volume, no other job's.
                client.V1VolumeMount(
                    name="work", mount_path=str(job.job_dir), sub_path=str(job.job_dir.relative_to(settings.work_dir))
                ),
                client.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
            ],
            security_context=client.V1SecurityContext(
                allow_privilege_escalation=False,
                capabilities=client.V1Capabilities(drop=["ALL"]),
                seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
                run_as_user=settings.run_as_user,
                run_as_non_root=True if settings.run_as_user else None,
            ),
        )
        pod = client.V1PodSpec(
            restart_policy="Never",
            containers=[container],
            volumes=[
                client.V1Volume(
                    name="work",
                    persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
                        claim_name=settings.volume_claim
                    ),
                ),
                client.V1Volume(
                    name="dshm", empty_dir=client.V1EmptyDirVolumeSource(medium="Memory", size_limit=settings.shm_size)
                ),
            ],
            node_selector=settings.node_selector or None,
            affinity=self._affinity(job),
            tolerations=[
                client.V1Toleration(**toleration.model_dump(exclude_none=True)) for toleration in settings.tolerations
            ]
            or None,
            service_account_name=settings.service_account,
            automount_service_account_token=False,  # lm-eval has no business with the Kubernetes API
        )
        return client.V1Job(
            api_version="batch/v1",
            kind="Job",
            metadata=client.V1ObjectMeta(name=name, namespace=settings.namespace, labels=job_labels),
            spec=client.V1JobSpec(
                backoff_limit=0,  # Corral owns retries
                active_deadline_seconds=settings.time_limit_minutes * 60,
                ttl_seconds_after_finished=KEEP_FINISHED_SECONDS,
                suspend=True if settings.queue else None,  # Kueue admits (unsuspends) it when there is room
                pod_failure_policy=client.V1PodFailurePolicy(
                    rules=[
                        client.V1PodFailurePolicyRule(
                            action="FailJob",  # a disrupted pod is not re-run behind Corral's back
                            on_pod_conditions=[
                                client.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")
                            ],
                        )
                    ]
                ),
                template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=pod),
            ),
        )

    def _affinity(self, job: Submission) -> client.V1Affinity | None:
        """Only the GPU kinds whose nodes hold the job: the server placed it on a shape, the scheduler must too."""
        if not job.required_memory_bytes or not job.gpus_per_node:
            return None
        enough = sorted(
            label
            for label, kind in self.settings.gpu_kinds.items()
            if kind.memory_bytes * job.gpus_per_node * job.placement.pipeline_parallel >= job.required_memory_bytes
        )
        if not enough or len(enough) == len(self.settings.gpu_kinds):
            return None
        term = client.V1NodeSelectorTerm(
            match_expressions=[
                client.V1NodeSelectorRequirement(key=self.settings.gpu_product_label, operator="In", values=enough)
            ]
        )
        required = client.V1NodeSelector(node_selector_terms=[term])
        return client.V1Affinity(
            node_affinity=client.V1NodeAffinity(required_during_scheduling_ignored_during_execution=required)
        )

    def submit(self, job: Submission) -> ClusterJob:
        manifest = self.manifest(job)
        try:
            created = self.batch.create_namespaced_job(
                self.settings.namespace, manifest, _request_timeout=REQUEST_SECONDS
            )
        except ApiException as exc:
            if exc.status != 409:
                raise KubernetesError(f"the API server refused the Job: {_said(exc)}") from exc
            existing = self._read(job_name(job.attempt_id))
            if existing is None or _labels(existing).get(ATTEMPT_LABEL) != job.attempt_id:
                raise KubernetesError(
                    f"a Job named {job_name(job.attempt_id)} exists and is not this attempt's"
                ) from exc
            log.info("attempt %s already has Job %s; adopting it", job.attempt_id, _name(existing))
            return self._job(existing, self._pods().get(_name(existing), []))
        except (HTTPError, OpenApiException, ValueError) as exc:
            raise KubernetesError(f"creating the Job: {_said(exc)}") from exc
        return ClusterJob(
            name=_name(created), ref=self._ref(_name(created)), phase="pending", reason="submitted", owner=self.owner
        )

    def _ref(self, name: str) -> str:
        return f"k8s:{self.settings.namespace}/{name}"

    def _ours(self, labels: dict[str, str]) -> bool:
        # Filtered here as well as by the selector: a proxy or an old API server may not apply it.
        return labels.get(RUNNER_LABEL) == self.owner and ATTEMPT_LABEL in labels

    def _pods(self) -> dict[str, list[client.V1Pod]]:
        try:
            pods = self.core.list_namespaced_pod(
                self.settings.namespace, label_selector=f"{RUNNER_LABEL}={self.owner}", _request_timeout=REQUEST_SECONDS
            ).items
        except API_ERRORS as exc:
            raise KubernetesError(f"listing pods: {_said(exc)}") from exc
        by_job: dict[str, list[client.V1Pod]] = defaultdict(list)
        for pod in pods:
            labels = _labels(pod)
            if self._ours(labels):
                by_job[job_name(labels[ATTEMPT_LABEL])].append(pod)
        return by_job

    def jobs(self) -> dict[str, ClusterJob]:
        try:
            listed = self.batch.list_namespaced_job(
                self.settings.namespace, label_selector=f"{RUNNER_LABEL}={self.owner}", _request_timeout=REQUEST_SECONDS
            ).items
        except API_ERRORS as exc:
            raise KubernetesError(f"listing Jobs: {_said(exc)}") from exc
        ours = [job for job in listed if self._ours(_labels(job))]
        pods = self._pods() if ours else {}
        return {_name(job): self._job(job, pods.get(_name(job), [])) for job in ours}

    def _read(self, name: str) -> client.V1Job | None:
        try:
            return self.batch.read_namespaced_job(name, self.settings.namespace, _request_timeout=REQUEST_SECONDS)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubernetesError(f"reading Job {name}: {_said(exc)}") from exc
        except (HTTPError, OpenApiException, ValueError) as exc:
            raise KubernetesError(f"reading Job {name}: {_said(exc)}") from exc

    def find(self, job: ClusterJob) -> ClusterJob:
        found = self._read(job.name)
        if found is None or not self._ours(_labels(found)):
            return ClusterJob(name=job.name, ref=job.ref, phase="gone", reason="no longer known to Kubernetes")
        return self._job(found, self._pods().get(job.name, []))

    def _job(self, job: client.V1Job, pods: list[client.V1Pod]) -> ClusterJob:
        phase, reason = job_phase(job, pods)
        name = _name(job)
        return ClusterJob(name=name, ref=self._ref(name), phase=phase, reason=reason, owner=self.owner)

    def cancel(self, job: ClusterJob) -> None:
        try:
            # Background: the Job goes at once and its pods after it (Orphan would leave lm-eval running).
            self.batch.delete_namespaced_job(
                job.name, self.settings.namespace, propagation_policy="Background", _request_timeout=REQUEST_SECONDS
            )
        except ApiException as exc:
            if exc.status != 404:
                raise KubernetesError(f"deleting Job {job.name}: {_said(exc)}") from exc
        except (HTTPError, OpenApiException, ValueError) as exc:
            raise KubernetesError(f"deleting Job {job.name}: {_said(exc)}") from exc

    def last_words(self, job: ClusterJob, job_dir: Path) -> str:
        """How the last pod ended (exit code, OOMKilled, eviction) and the end of its log."""
        try:
            pods = self._pods().get(job.name, [])
        except KubernetesError as exc:
            return f"(the pods could not be read: {exc})"
        if not pods:
            return "(no pod was left to tell)"
        pod = max(pods, key=lambda pod: str(pod.metadata.creation_timestamp or "") if pod.metadata else "")
        words = [f"pod {_name(pod)}: {ended(pod)}"]
        try:
            text = self.core.read_namespaced_pod_log(
                _name(pod),
                self.settings.namespace,
                container=CONTAINER,
                tail_lines=40,
                _request_timeout=REQUEST_SECONDS,
            )
        except API_ERRORS as exc:
            text = f"(its log could not be read: {_said(exc)})"
        words.append(str(text)[-2000:])
        return "\n".join(words)


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
    latest = [pod for pod in pods if _pod_phase(pod) not in ("Succeeded", "Failed")]
    if any(_pod_phase(pod) == "Running" for pod in latest):
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
    return _pod_phase(pod) or "unknown"


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


def _pod_phase(pod: client.V1Pod) -> str:
    return (pod.status.phase or "") if pod.status else ""


def _labels(item: client.V1Job | client.V1Pod) -> dict[str, str]:
    return dict(item.metadata.labels or {}) if item.metadata else {}


def _name(item: client.V1Job | client.V1Pod | client.V1Node) -> str:
    return (item.metadata.name or "") if item.metadata else ""


def _said(exc: Exception) -> str:
    """What the API server said, without the request's headers (they carry the bearer token)."""
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}: {str(exc.body or '')[:500]}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"
