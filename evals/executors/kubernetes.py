"""Kubernetes through the official client: one batch/v1 Job per attempt, named after it, labelled with the runner
that owns it. Two list calls per tick (Jobs, then their pods) tell every job's state, whatever their number.

The Job runs lm-eval once: no retries (backoffLimit 0), a pod disrupted by the cluster (preempted, node drained,
evicted) fails the Job through its pod failure policy and the agent hands the attempt back, and a Job that Kueue
suspends after it started is handed back too. Corral owns retries, as with Slurm's --no-requeue.
"""

import logging
from collections import defaultdict

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException, OpenApiException
from urllib3.exceptions import HTTPError

from corral_runner.executors.base import EngineError, EngineJob, EngineUnreachable, Pace, Submission, job_name, shapes
from corral_runner.executors.kubernetes_states import ended, job_phase, labels_of, name_of, pod_phase, said
from corral_runner.executors.settings import KubernetesExecutor
from corral_runner.jobdir import JobDirectory
from corral_runner.protocol import Accelerator

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


# What a call to the API server can raise: refused, unreachable, or an answer the client's models reject.
API_ERRORS = (ApiException, HTTPError, OpenApiException, ValueError)


class KubernetesError(EngineError):
    """The API server refused a request."""


class KubernetesUnreachable(EngineUnreachable, KubernetesError):
    """The API server did not answer, or answered that it cannot now (5xx, 429)."""


def api_error(what: str, exc: Exception) -> KubernetesError:
    """A failed call in words, as unreachable when the API server itself was the trouble."""
    away = not isinstance(exc, ApiException) or exc.status in (0, 429) or (exc.status or 0) >= 500
    if isinstance(exc, OpenApiException | ValueError) and not isinstance(exc, ApiException):
        away = False  # an answer the client's models reject: the API server spoke
    return (KubernetesUnreachable if away else KubernetesError)(f"{what}: {said(exc)}")


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

    def __init__(self, settings: KubernetesExecutor, owner: str = "", api: client.ApiClient | None = None) -> None:
        self.settings = settings
        self.owner = owner
        self.pace = Pace.of_cluster(settings)
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
            raise api_error("listing nodes", exc) from exc
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
                    log.warning("node %s: GPU %r is not in gpu_kinds; it is not offered", name_of(node), labels)
                continue
            found.append((node, kind.kind, kind.memory_bytes, count))
        return found

    def node_shapes(self) -> list[Accelerator]:
        return shapes([(kind, memory, count) for _node, kind, memory, count in self._gpu_nodes()])

    def free_now(self) -> list[Accelerator]:
        nodes = [entry for entry in self._gpu_nodes() if not (entry[0].spec and entry[0].spec.unschedulable)]
        try:
            pods = self.core.list_pod_for_all_namespaces(
                field_selector="status.phase!=Succeeded,status.phase!=Failed", _request_timeout=REQUEST_SECONDS
            ).items
        except API_ERRORS as exc:
            raise api_error("listing pods", exc) from exc
        taken: dict[str, int] = defaultdict(int)
        for pod in pods:
            if pod.spec is None or not pod.spec.node_name or pod_phase(pod) in ("Succeeded", "Failed"):
                continue
            for container in pod.spec.containers:
                limits = (container.resources.limits or {}) if container.resources else {}
                taken[pod.spec.node_name] += int(limits.get(self.settings.gpu_resource, "0") or 0)
        return shapes([(kind, memory, count - taken[name_of(node)]) for node, kind, memory, count in nodes])

    # -- the jobs -----------------------------------------------------------------------------------------------------

    def manifest(self, job: Submission) -> client.V1Job:
        """The Job of one attempt; what it needs is on the volume, and its only secret is referenced."""
        settings = self.settings
        labels = {**MANAGED_BY, RUNNER_LABEL: self.owner, ATTEMPT_LABEL: str(job.attempt_id)}
        job_labels = {**labels, KUEUE_QUEUE_LABEL: settings.queue} if settings.queue else labels
        return client.V1Job(
            api_version="batch/v1",
            kind="Job",
            metadata=client.V1ObjectMeta(
                name=job_name(job.attempt_id), namespace=settings.namespace, labels=job_labels
            ),
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
                template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=self._pod(job)),
            ),
        )

    def _pod(self, job: Submission) -> client.V1PodSpec:
        settings = self.settings
        return client.V1PodSpec(
            restart_policy="Never",
            containers=[self._container(job)],
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

    def _container(self, job: Submission) -> client.V1Container:
        settings, folder = self.settings, job.directory.path
        gpus = {settings.gpu_resource: str(job.gpus_per_node)} if job.gpus_per_node else {}
        return client.V1Container(
            name=CONTAINER,
            image=settings.image,
            command=[settings.python, "-m", "corral_runner.cluster_job", str(job.directory.spec)],
            working_dir=str(folder),
            env=self._env(job),
            resources=client.V1ResourceRequirements(limits=gpus or None, requests=gpus or None),
            volume_mounts=[
                # Its own directory of the shared volume, no other job's.
                client.V1VolumeMount(
                    name="work", mount_path=str(folder), sub_path=str(folder.relative_to(settings.work_dir))
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

    def _env(self, job: Submission) -> list[client.V1EnvVar]:
        """What the job's environment may carry of the agent's, and the Hub token by reference to its Secret."""
        settings = self.settings
        env = [client.V1EnvVar(name=key, value=job.env[key]) for key in PASSED_ENV if key in job.env]
        if settings.hf_token_secret and job.needs_hub_token:  # only for weights that may need it
            secret = client.V1SecretKeySelector(name=settings.hf_token_secret, key="HF_TOKEN")
            env.append(client.V1EnvVar(name="HF_TOKEN", value_from=client.V1EnvVarSource(secret_key_ref=secret)))
        elif "HF_TOKEN" in job.env and not settings.hf_token_secret and not self.warned_of_token:
            self.warned_of_token = True
            log.warning(
                "the runner has an HF token but no hf_token_secret: the job runs without it (gated weights fail)"
            )
        return env

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

    def submit(self, job: Submission) -> EngineJob:
        manifest = self.manifest(job)
        try:
            created = self.batch.create_namespaced_job(
                self.settings.namespace, manifest, _request_timeout=REQUEST_SECONDS
            )
        except ApiException as exc:
            if exc.status != 409:
                raise api_error("the API server refused the Job", exc) from exc
            existing = self._read(job_name(job.attempt_id))
            if existing is None or labels_of(existing).get(ATTEMPT_LABEL) != str(job.attempt_id):
                raise KubernetesError(
                    f"a Job named {job_name(job.attempt_id)} exists and is not this attempt's"
                ) from exc
            log.info("attempt %s already has Job %s; adopting it", job.attempt_id, name_of(existing))
            return self._job(existing, self._pods().get(name_of(existing), []))
        except (HTTPError, OpenApiException, ValueError) as exc:
            raise api_error("creating the Job", exc) from exc
        return EngineJob(
            name=name_of(created),
            ref=self._ref(name_of(created)),
            phase="pending",
            reason="submitted",
            owner=self.owner,
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
            raise api_error("listing pods", exc) from exc
        by_job: dict[str, list[client.V1Pod]] = defaultdict(list)
        for pod in pods:
            labels = labels_of(pod)
            if self._ours(labels):
                by_job[job_name(labels[ATTEMPT_LABEL])].append(pod)
        return by_job

    def jobs(self) -> dict[str, EngineJob]:
        try:
            listed = self.batch.list_namespaced_job(
                self.settings.namespace, label_selector=f"{RUNNER_LABEL}={self.owner}", _request_timeout=REQUEST_SECONDS
            ).items
        except API_ERRORS as exc:
            raise api_error("listing Jobs", exc) from exc
        ours = [job for job in listed if self._ours(labels_of(job))]
        pods = self._pods() if ours else {}
        return {name_of(job): self._job(job, pods.get(name_of(job), [])) for job in ours}

    def _read(self, name: str) -> client.V1Job | None:
        try:
            return self.batch.read_namespaced_job(name, self.settings.namespace, _request_timeout=REQUEST_SECONDS)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise api_error(f"reading Job {name}", exc) from exc
        except (HTTPError, OpenApiException, ValueError) as exc:
            raise api_error(f"reading Job {name}", exc) from exc

    def find(self, job: EngineJob, directory: JobDirectory) -> EngineJob:
        found = self._read(job.name)
        if found is None or not self._ours(labels_of(found)):
            return EngineJob(name=job.name, ref=job.ref, phase="gone", reason="no longer known to Kubernetes")
        return self._job(found, self._pods().get(job.name, []))

    def _job(self, job: client.V1Job, pods: list[client.V1Pod]) -> EngineJob:
        phase, reason = job_phase(job, pods)
        name = name_of(job)
        return EngineJob(name=name, ref=self._ref(name), phase=phase, reason=reason, owner=self.owner)

    def cancel(self, job: EngineJob) -> None:
        try:
            # Background: the Job goes at once and its pods after it (Orphan would leave lm-eval running).
            self.batch.delete_namespaced_job(
                job.name, self.settings.namespace, propagation_policy="Background", _request_timeout=REQUEST_SECONDS
            )
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(f"deleting Job {job.name}", exc) from exc
        except (HTTPError, OpenApiException, ValueError) as exc:
            raise api_error(f"deleting Job {job.name}", exc) from exc

    def last_words(self, job: EngineJob, directory: JobDirectory) -> str:
        """How the last pod ended (exit code, OOMKilled, eviction) and the end of its log."""
        try:
            pods = self._pods().get(job.name, [])
        except KubernetesError as exc:
            return f"(the pods could not be read: {exc})"
        if not pods:
            return "(no pod was left to tell)"
        pod = max(pods, key=lambda pod: str(pod.metadata.creation_timestamp or "") if pod.metadata else "")
        words = [f"pod {name_of(pod)}: {ended(pod)}"]
        try:
            text = self.core.read_namespaced_pod_log(
                name_of(pod),
                self.settings.namespace,
                container=CONTAINER,
                tail_lines=40,
                _request_timeout=REQUEST_SECONDS,
            )
        except API_ERRORS as exc:
            text = f"(its log could not be read: {said(exc)})"
        words.append(str(text)[-2000:])
        return "\n".join(words)

    def close(self) -> None:
        return None  # the Jobs run on in the cluster: a restarted agent adopts them
