"""Applying a Hub fetch to the registry: a revision per new commit, `main` moved, blanks filled, differences kept.

The network part (HubClient.fetch) runs before anything is written, so a Hub failure changes nothing but the
model's sync bookkeeping.
"""

import re
from datetime import timedelta
from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession

from corral.config import Settings
from corral.documents import JsonObject
from corral.errors import Conflict
from corral.fields import ALIAS_PATTERN
from corral.hub import repository
from corral.hub.client import HubClient, HubError, HubFetch
from corral.hub.schemas import SyncResult
from corral.hub.snapshot import HubSnapshot, disagreements, hub_facts, snapshot
from corral.registry.models.schemas import ModelCreate, hub_state
from corral.registry.models.service import ModelService, complete_architecture, effective_license
from corral.registry.repository import model_by_repo_id, require_model
from corral.registry.revisions.service import RevisionService
from corral.tables import Revision
from corral.tables.base import utcnow
from corral.wire.enums import ModelKind

ALIASABLE = re.compile(ALIAS_PATTERN)  # a branch named like an alias gets one, moved on each new commit
LEASE = timedelta(minutes=5)


async def fetch_in_thread(
    client: HubClient, repo_id: str, revision: str, *, deadline_seconds: float | None = None
) -> HubFetch:
    """The Hub's answer, read in the Hub's bulkhead. A request passes its deadline; background passes pass none
    and wait for a slot, keeping their patient retries."""
    return await client.ask(
        client.fetch, repo_id, revision, deadline_seconds=deadline_seconds, patient=deadline_seconds is None
    )


class HubSyncService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings

    async def register(self, repo_id: str, fetch: HubFetch, *, revision: str, extra: dict[str, object]) -> SyncResult:
        """Create a model from the Hub's metadata (what the body did not state), then apply the fetch."""
        if await model_by_repo_id(self.session, repo_id) is not None:
            raise Conflict(f"Model {repo_id!r} is registered already; POST .../sync to refresh it.")
        record = snapshot(fetch, revision)
        values = {"repo_id": repo_id, "kind": _guess_kind(repo_id, record), **extra}
        if "license" not in values and (slug := await self._license_slug(record)) is not None:
            values["license"] = slug
        if "base_model" not in values:
            for base in record["base_model"]:
                if base != repo_id and await model_by_repo_id(self.session, base) is not None:
                    values["base_model"] = base
                    break
        await ModelService(self.session).create(ModelCreate.model_validate(values))
        return await self.apply(repo_id, fetch, revision=revision)

    async def apply(self, repo_id: str, fetch: HubFetch, *, revision: str) -> SyncResult:
        model = await require_model(self.session, repo_id)
        record = snapshot(fetch, revision)
        facts = hub_facts(record)
        filled = [field for field in facts if getattr(model, field) is None]
        for field in filled:
            setattr(model, field, facts[field])
        complete_architecture(model)
        revisions = RevisionService(self.session)
        # The first snapshot of a commit stays: a re-sync of the same sha changes nothing (not even counters).
        created = await revisions.by_sha(model, fetch.sha) is None
        if created:
            self.session.add(
                Revision(
                    model_id=model.id, sha=fetch.sha, ref=revision, snapshot=cast(JsonObject, record), source="hub"
                )
            )
            await self.session.flush()
        if ALIASABLE.match(revision) and revision != fetch.sha:
            await revisions.set_alias(repo_id, revision, fetch.sha)
        now = utcnow()
        model.hub_ref, model.hub_sha = revision, fetch.sha
        model.hub_sync_status = "gated" if fetch.files_gated else "ok"
        model.hub_last_attempt_at = model.hub_last_success_at = now
        model.hub_last_error = "; ".join(fetch.notes) or None
        model.hub_consecutive_failures = 0
        model.hub_next_sync_at = now + timedelta(seconds=self.settings.hub_sync_interval_seconds or 0)
        model.hub_lease_until = None
        model.hub_disagreements = disagreements(model, effective_license(model), record)
        await self.session.flush()
        self.session.expire(model)
        model = await require_model(self.session, repo_id)
        return SyncResult(model=repo_id, sha=fetch.sha, revision_created=created, filled=filled, hub=hub_state(model))

    async def record_failure(self, repo_id: str, error: HubError) -> None:
        """Bookkeeping only: the error and when to try again (exponential, capped at the sync interval)."""
        model = await model_by_repo_id(self.session, repo_id)
        if model is None:
            return
        failures = model.hub_consecutive_failures + 1
        interval = self.settings.hub_sync_interval_seconds or 3600
        delay = min(interval, 60 * 2 ** min(failures, 10))
        now = utcnow()
        await repository.record_failure(
            self.session, model, error.message, failures, now, now + timedelta(seconds=delay)
        )

    async def _license_slug(self, record: HubSnapshot) -> str | None:
        hub = record["license"]
        if not hub["id"]:
            return None
        slugs = await repository.license_slugs(self.session, hub["id"], hub["name"])
        return slugs[0] if len(slugs) == 1 else None


def _guess_kind(repo_id: str, record: HubSnapshot) -> str:
    name, tags, pipeline = repo_id.lower(), set(record["tags"]), record["pipeline_tag"] or ""
    if "guard" in name:
        return ModelKind.GUARD.value
    if pipeline in ("image-text-to-text", "image-to-text") or "vision" in name:
        return ModelKind.VISION.value
    if "code" in name:
        return ModelKind.CODE.value
    if "conversational" in tags or any(word in name for word in ("instruct", "chat", "-it")):
        return ModelKind.INSTRUCT.value
    return ModelKind.BASE.value
