"""Reading model metadata from the Hugging Face Hub (or a mirror) through huggingface_hub, never the weights.

A fetch costs 4 + shards requests: model info with file metadata, config.json (HEAD + GET), the repo's refs,
and one ranged read of each safetensors file's header. Everything else (gating, licence, card, files with
LFS hashes, chat template) comes from the model info. Calls are blocking; callers make them through `ask`, in the
Hub's bulkhead (app/outbound.py), with a deadline, holding no database connection.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, cached_property, partial
from types import ModuleType
from typing import TYPE_CHECKING, TypedDict, TypeVar

from corral.config import Settings
from corral.documents import JsonObject
from corral.outbound import Bulkhead, DeadlinePassed, Saturated

if TYPE_CHECKING:  # imported at the first Hub call (app.hub.client.hub), not by every server worker at start
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.hf_api import ModelInfo

log = logging.getLogger("corral.hub")


@cache
def hub() -> tuple[ModuleType, ModuleType, ModuleType]:
    """huggingface_hub, its errors and httpx2, imported once, when the first Hub call needs them."""
    import httpx2
    import huggingface_hub
    from huggingface_hub import errors

    return huggingface_hub, errors, httpx2


@cache
def bounded_http(timeout_seconds: float) -> None:
    """Every request huggingface_hub makes gets a timeout: its shared HTTP client has none by default, and the
    calls that pass none (create_commit's) could otherwise wait on a silent Hub for ever."""
    from huggingface_hub.utils import _http

    def client_factory() -> httpx2.Client:
        client = _http.default_client_factory()
        client.timeout = hub()[2].Timeout(timeout_seconds)
        return client

    _http.set_client_factory(client_factory)


T = TypeVar("T")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")
CHAT_TEMPLATE_FILES = frozenset({"chat_template.jinja", "chat_template.json"})


class HubError(Exception):
    """The Hub could not answer what was asked; `status` is the HTTP status Corral answers with."""

    status = 502
    slug = "hub-error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HubNotFound(HubError):
    status, slug = 404, "hub-not-found"


class HubUnavailable(HubError):
    status, slug = 503, "hub-unavailable"

    def __init__(self, message: str, *, retry_after_seconds: int = 30) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class HubBadGateway(HubError):
    status, slug = 502, "hub-bad-gateway"


class CommitRecord(TypedDict):
    sha: str
    date: str
    title: str
    authors: list[str]


@dataclass
class HubFetch:
    """What one sync read from the Hub for one repo at one revision."""

    repo_id: str
    sha: str
    info: ModelInfo
    config: JsonObject | None
    safetensors_parameters: dict[str, int] | None
    safetensors_files: int
    refs: dict[str, list[dict[str, str]]]
    files_gated: bool
    notes: list[str] = field(default_factory=list)


class HubClient:
    def __init__(self, settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.endpoint = settings.hub_endpoint
        self.settings = settings
        self._sleep = sleep
        # The Hub's slots: requests beyond them are refused at once, background passes wait for one.
        self.outbound = Bulkhead(f"The Hub at {self.endpoint}", settings.hub_sync_concurrency)

    def refuse_when_full(self) -> None:
        """503 at once when every Hub slot is taken, before any work for a call that could not be made."""
        try:
            self.outbound.refuse_when_full()
        except Saturated as full:
            raise HubUnavailable(f"{full} Nothing was changed.", retry_after_seconds=full.retry_after_seconds) from None

    async def ask(
        self, function: Callable[..., T], *args: object, deadline_seconds: float | None, patient: bool = False
    ) -> T:
        """One of this client's blocking calls, in the Hub's bulkhead. A person (or CI) waiting on a request
        gets an answer by `deadline_seconds`, whatever the Hub does; background passes pass none and wait."""
        try:
            return await self.outbound.call(function, *args, deadline_seconds=deadline_seconds, patient=patient)
        except Saturated as full:
            raise HubUnavailable(f"{full} Nothing was changed.", retry_after_seconds=full.retry_after_seconds) from None
        except DeadlinePassed as late:
            # The thread goes on until its own timeouts end it; its answer is not used.
            raise HubUnavailable(
                f"The Hub at {self.endpoint} did not answer within {late.seconds:g} s; nothing was changed. "
                "Retry later (models synced once are also re-synced in the background)."
            ) from None

    @cached_property
    def api(self) -> HfApi:
        bounded_http(self.settings.hub_timeout_seconds)
        token = self.settings.hub_token.get_secret_value() if self.settings.hub_token else False
        # token=False (not None): never fall back to a token saved on the server machine by `hf auth login`.
        api: HfApi = hub()[0].HfApi(endpoint=self.endpoint, token=token, library_name="corral")
        return api

    def fetch(self, repo_id: str, revision: str = "main") -> HubFetch:
        try:
            info = self._call(
                repo_id,
                lambda: self.api.model_info(
                    repo_id, revision=revision, files_metadata=True, timeout=self.settings.hub_timeout_seconds
                ),
            )
        except hub()[1].GatedRepoError:
            raise HubNotFound(
                f"The Hub at {self.endpoint} hides even the metadata of {repo_id} from the server's token."
            ) from None
        if info.sha is None:
            raise HubBadGateway(f"The Hub at {self.endpoint} gave no commit sha for {repo_id}@{revision}.")
        sha = info.sha
        names = {sibling.rfilename for sibling in info.siblings or []}
        notes: list[str] = []
        files_gated = False
        config: JsonObject | None = None
        parameters: dict[str, int] | None = None
        shards = sorted(name for name in names if name.endswith(".safetensors") and "/" not in name)
        try:
            if "config.json" in names:
                config = self._read_json(repo_id, "config.json", sha)
            if shards:
                parameters = {}
                for shard in shards:
                    header = self._call(
                        repo_id,
                        partial(
                            self.api.parse_safetensors_file_metadata,
                            repo_id,
                            shard,
                            revision=sha,
                            timeout=self.settings.hub_timeout_seconds,
                        ),
                    )
                    for dtype, count in header.parameter_count.items():
                        parameters[dtype] = parameters.get(dtype, 0) + count
        except hub()[1].GatedRepoError:
            files_gated, config, parameters = True, None, None
            notes.append(
                f"The files of {repo_id} are gated ({info.gated or 'gated'} approval) and the server's Hub token "
                "has no access: metadata is recorded, but config.json and safetensors headers could not be read."
            )
        try:
            refs = self._call(repo_id, lambda: self.api.list_repo_refs(repo_id))
            branches = [{"name": ref.name, "sha": ref.target_commit} for ref in refs.branches]
            tags = [{"name": ref.name, "sha": ref.target_commit} for ref in refs.tags]
        except hub()[1].GatedRepoError:
            branches, tags = [], []
        return HubFetch(
            repo_id=repo_id,
            sha=sha,
            info=info,
            config=config,
            safetensors_parameters=parameters,
            safetensors_files=len(shards) if parameters is not None else 0,
            refs={"branches": branches, "tags": tags},
            files_gated=files_gated,
            notes=notes,
        )

    def commits(self, repo_id: str, revision: str, limit: int) -> list[CommitRecord]:
        # list_repo_commits already retries with its own backoff (huggingface_hub's http_backoff); don't stack ours.
        listed = self._call(repo_id, lambda: self.api.list_repo_commits(repo_id, revision=revision), retries=0)
        return [
            CommitRecord(
                sha=commit.commit_id,
                date=commit.created_at.isoformat(),
                title=commit.title,
                authors=list(commit.authors),
            )
            for commit in listed[:limit]
        ]

    def open_pull_request(self, repo_id: str, files: dict[str, bytes], title: str, description: str) -> str:
        """Commit `files` to the model repo as a pull request (never to a branch); returns the PR's URL."""
        operations = [
            hub()[0].CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()
        ]
        info = self._call(
            repo_id,
            lambda: self.api.create_commit(
                repo_id,
                operations=operations,
                commit_message=title,
                commit_description=description,
                create_pr=True,
            ),
            retries=0,  # a retried commit could open a second pull request
        )
        return str(info.pr_url or info.commit_url)

    def _read_json(self, repo_id: str, filename: str, sha: str) -> JsonObject:
        with tempfile.TemporaryDirectory(prefix="corral-hub-") as cache:
            path = self._call(
                repo_id,
                lambda: self.api.hf_hub_download(
                    repo_id, filename, revision=sha, cache_dir=cache, etag_timeout=self.settings.hub_timeout_seconds
                ),
            )
            with open(path, encoding="utf-8") as handle:
                loaded = json.load(handle)
        if not isinstance(loaded, dict):
            raise HubBadGateway(f"{repo_id}/{filename} on the Hub is not a JSON object.")
        return loaded

    def _call(self, repo_id: str, request: Callable[[], T], retries: int | None = None) -> T:
        """One Hub call, retried on 429 (honouring Retry-After), 5xx and network errors, with jittered backoff."""
        attempt = 0
        retries = self.settings.hub_retries if retries is None else retries
        _, errors, httpx2 = hub()
        while True:
            try:
                return request()
            except hub()[1].GatedRepoError:
                raise
            except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.EntryNotFoundError) as exc:
                raise HubNotFound(_not_found_message(self.endpoint, repo_id, exc)) from None
            except errors.HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status not in RETRY_STATUSES or attempt >= retries:
                    raise _gateway_error(self.endpoint, repo_id, status) from None
                delay = self._delay(attempt, _retry_after(exc))
            except ValueError as exc:  # an answer huggingface_hub could not parse (a broken mirror)
                raise HubBadGateway(f"The Hub at {self.endpoint} sent an answer Corral cannot read: {exc}") from None
            except (httpx2.TransportError, OSError) as exc:
                if attempt >= retries:
                    raise HubUnavailable(
                        f"The Hub at {self.endpoint} is unreachable ({type(exc).__name__}); nothing was changed."
                    ) from None
                delay = self._delay(attempt, None)
            attempt += 1
            log.info("hub: retrying %s in %.2fs (attempt %d)", repo_id, delay, attempt + 1)
            self._sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, float(self.settings.hub_backoff_max_seconds))
        base = self.settings.hub_backoff_seconds * 2**attempt
        return float(min(base * (0.5 + random.random()), self.settings.hub_backoff_max_seconds))


def _retry_after(exc: HfHubHTTPError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    return float(value) if value is not None and value.strip().isdigit() else None


def _not_found_message(endpoint: str, repo_id: str, exc: Exception) -> str:
    if isinstance(exc, hub()[1].RevisionNotFoundError):
        return f"The Hub at {endpoint} has no such revision of {repo_id}."
    if isinstance(exc, hub()[1].EntryNotFoundError):
        return f"A file listed for {repo_id} is missing on the Hub at {endpoint}."
    return f"The Hub at {endpoint} has no model repo {repo_id} (or it is private and the server's token cannot see it)."


def _gateway_error(endpoint: str, repo_id: str, status: int) -> HubError:
    if status == 429:
        return HubUnavailable(f"The Hub at {endpoint} is rate-limiting requests for {repo_id}; try again later.")
    if status >= 500:
        return HubBadGateway(f"The Hub at {endpoint} answered {status} for {repo_id}; nothing was changed.")
    return HubBadGateway(f"The Hub at {endpoint} refused the request for {repo_id} ({status}).")
