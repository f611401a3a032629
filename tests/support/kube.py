"""A Kubernetes API server for the tests: kmock's emulator (a real HTTP server keeping objects the way the API server
does), in a thread of its own, with a kubeconfig file pointing at it. The real `kubernetes` client talks to it. There is
no scheduler or kubelet behind it: the test plays them, creating the pods a Job would get and setting their status.
"""

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kmock

NAMESPACE = "evals"
GPU_LABEL = "nvidia.com/gpu.product"


class KubeAPI:
    def __init__(self, emulator: kmock.KubernetesEmulator, url: str, loop: asyncio.AbstractEventLoop, root: Path):
        self.emulator = emulator
        self.url = url.rstrip("/")
        self.loop = loop
        self.kubeconfig = root / "kubeconfig"
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "test", "cluster": {"server": self.url}}],
                    "users": [{"name": "corral", "user": {"token": "kube-bearer-token-of-the-runner"}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "corral"}}],
                    "current-context": "test",
                }
            )
        )

    def _call(self, function: Any) -> Any:
        """Runs on the emulator's own loop: its objects are not to be touched from another thread mid-request."""
        future: asyncio.Future[Any] = asyncio.run_coroutine_threadsafe(_wrap(function), self.loop)  # type: ignore[arg-type]
        return future.result(timeout=10)

    def put(self, plural: str, name: str, body: dict[str, Any], namespace: str | None = NAMESPACE) -> None:
        body = {**body, "metadata": {"name": name, "namespace": namespace, **body.get("metadata", {})}}
        if namespace is None:
            body["metadata"].pop("namespace")

        def put() -> None:
            self.emulator.objects[plural, namespace, name] = body

        self._call(put)

    def get(self, plural: str, name: str, namespace: str | None = NAMESPACE) -> dict[str, Any] | None:
        def get() -> dict[str, Any] | None:
            try:
                history = self.emulator.objects[plural, namespace, name]
            except KeyError:
                return None
            return _latest(history)

        result: dict[str, Any] | None = self._call(get)
        return result

    def jobs(self) -> dict[str, dict[str, Any]]:
        def listed() -> dict[str, dict[str, Any]]:
            latest = {key[2]: _latest(value) for key, value in self.emulator.objects.items() if key[0].plural == "jobs"}
            return {name: job for name, job in latest.items() if job is not None}

        result: dict[str, dict[str, Any]] = self._call(listed)
        return result

    def set_status(self, plural: str, name: str, status: dict[str, Any], **spec: Any) -> None:
        """What the Job controller or the kubelet would write."""
        found = self.get(plural, name)
        assert found is not None, f"{plural}/{name} does not exist"
        found["status"] = status
        found["spec"] = {**found.get("spec", {}), **spec}
        self.put(plural, name, found)

    def pod(self, job: dict[str, Any], suffix: str = "x1", **status: Any) -> str:
        """The pod the Job controller would create from the Job's template, with this status."""
        name = f"{job['metadata']['name']}-{suffix}"
        template = job["spec"]["template"]
        labels = {**template["metadata"]["labels"], "job-name": job["metadata"]["name"]}
        self.put("v1/pods", name, {"metadata": {"labels": labels}, "spec": template["spec"], "status": status})
        return name

    def pod_log(self, pod: str, text: str) -> None:
        def react() -> None:
            reply = kmock.Response(payload=text.encode(), headers={"Content-Type": "text/plain"})
            self.emulator[f"get /api/v1/namespaces/{NAMESPACE}/pods/{pod}/log"] << reply

        self._call(react)

    def node(self, name: str, product: str, gpus: int, **labels: str) -> None:
        body = {
            "metadata": {"labels": {GPU_LABEL: product, **labels}},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "32", "memory": "256Gi"}},
        }
        self.put("v1/nodes", name, body, namespace=None)

    def requests(self) -> list[kmock.Request]:
        def listed() -> list[kmock.Request]:
            return list(self.emulator)

        result: list[kmock.Request] = self._call(listed)
        return result


def _latest(history: Any) -> dict[str, Any] | None:
    """The object as it stands: the emulator keeps every version, None once deleted."""
    if history is None or history.deleted:
        return None
    return dict(json.loads(json.dumps(history.last.raw, default=dict)))


async def _wrap(function: Any) -> Any:
    return function()


@contextmanager
def running_api(root: Path) -> Iterator[KubeAPI]:
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            for plural in ("v1/nodes", "v1/pods", "batch/v1/jobs"):  # served even while none exists
                emulator.resources[plural] = {}
            box["stop"] = asyncio.Event()
            box["api"] = KubeAPI(emulator, str(server.url), asyncio.get_running_loop(), root)
            started.set()
            await box["stop"].wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), name="kmock", daemon=True)
    thread.start()
    assert started.wait(30), "the Kubernetes API emulator did not start"
    api: KubeAPI = box["api"]
    try:
        yield api
    finally:
        api.loop.call_soon_threadsafe(box["stop"].set)
        thread.join(timeout=10)
