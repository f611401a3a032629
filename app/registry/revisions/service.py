"""Revisions are immutable commit-pinned snapshots; aliases are movable names for one of them."""

import re
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from corral.errors import Conflict, NotFound, UnprocessableEntity
from corral.pagination import PageRequest, SortColumn, paginate
from corral.registry import repository
from corral.registry.repository import require_model
from corral.registry.revisions.schemas import AliasRead, CodeTrust, CodeTrustGrant, RevisionCreate, RevisionRead
from corral.tables import Alias, Model, Revision
from corral.tables.base import utcnow

SHA = re.compile(r"^[0-9a-f]{40}$")
SORT_COLUMNS: dict[str, SortColumn] = {"created_at": Revision.created_at}


class RevisionService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, repo_id: str, body: RevisionCreate, *, source: str = "manual") -> tuple[RevisionRead, bool]:
        """Record a revision; the same sha again returns it unchanged (created=False) unless it differs."""
        model = await require_model(self.session, repo_id)
        existing = await self.by_sha(model, body.sha)
        if existing is not None:
            if (existing.ref, existing.snapshot) != (body.ref, body.snapshot) and body.snapshot:
                raise Conflict(
                    f"Revision {body.sha} of {repo_id} exists with another snapshot; revisions are immutable."
                )
            return await self._read(model, existing), False
        revision = Revision(model_id=model.id, sha=body.sha, ref=body.ref, snapshot=body.snapshot, source=source)
        self.session.add(revision)
        await self.session.flush()
        return await self._read(model, revision), True

    async def get(self, repo_id: str, ref: str) -> RevisionRead:
        """A revision by full sha, or by alias name."""
        model = await require_model(self.session, repo_id)
        return await self._read(model, await self.resolve(model, ref))

    async def list_page(self, repo_id: str, *, sort: str, page: PageRequest) -> tuple[list[RevisionRead], str | None]:
        model = await require_model(self.session, repo_id)
        revisions, cursor = await paginate(
            self.session,
            repository.revisions_of(model.id),
            sort=sort,
            columns=SORT_COLUMNS,
            id_column=Revision.id,
            page=page,
        )
        aliases = await self._aliases_by_revision(model)
        return [_to_read(model, revision, aliases.get(revision.id, [])) for revision in revisions], cursor

    async def set_alias(self, repo_id: str, name: str, sha: str) -> AliasRead:
        model = await require_model(self.session, repo_id)
        revision = await self.by_sha(model, sha)
        if revision is None:
            # Also the answer when the sha belongs to another model: an alias never crosses models.
            raise UnprocessableEntity(f"{repo_id} has no revision {sha}; record it first.", field="sha")
        alias = await self.session.get(Alias, (model.id, name))
        if alias is None:
            alias = Alias(model_id=model.id, name=name, revision_id=revision.id)
            self.session.add(alias)
        elif alias.revision_id != revision.id:
            alias.revision_id, alias.updated_at = revision.id, utcnow()
        await self.session.flush()
        return AliasRead(name=name, sha=revision.sha, revision_id=revision.id, updated_at=alias.updated_at)

    async def delete_alias(self, repo_id: str, name: str) -> None:
        model = await require_model(self.session, repo_id)
        alias = await self.session.get(Alias, (model.id, name))
        if alias is None:
            raise NotFound(f"{repo_id} has no alias {name!r}.")
        await self.session.delete(alias)
        await self.session.flush()

    async def list_aliases(self, repo_id: str) -> list[AliasRead]:
        model = await require_model(self.session, repo_id)
        return [
            AliasRead(name=alias.name, sha=sha, revision_id=alias.revision_id, updated_at=alias.updated_at)
            for alias, sha in await repository.aliases_with_sha(self.session, model.id)
        ]

    async def trust_code(self, repo_id: str, sha: str, grant: CodeTrustGrant, admin: str) -> RevisionRead:
        """Let this commit's own code run (trust_remote_code) in evaluations requested from now on."""
        model, revision = await self._pinned(repo_id, sha)
        if revision.code_trusted_at is None:
            revision.code_trusted_at, revision.code_trusted_by = utcnow(), admin
        revision.code_trust_reason = grant.reason
        await self.session.flush()
        return await self._read(model, revision)

    async def distrust_code(self, repo_id: str, sha: str) -> None:
        """Withdraw the trust: jobs claimed from now on run without the repository's code."""
        _, revision = await self._pinned(repo_id, sha)
        revision.code_trusted_at = revision.code_trusted_by = revision.code_trust_reason = None
        await self.session.flush()

    async def _pinned(self, repo_id: str, sha: str) -> tuple[Model, Revision]:
        model = await require_model(self.session, repo_id)
        revision = await self.by_sha(model, sha)
        if revision is None:
            raise NotFound(f"{repo_id} has no recorded revision {sha}.")
        return model, revision

    async def by_sha(self, model: Model, sha: str) -> Revision | None:
        return await repository.revision_by_sha(self.session, model.id, sha)

    async def resolve(self, model: Model, ref: str) -> Revision:
        if SHA.match(ref):
            revision = await self.by_sha(model, ref)
        else:
            revision = await repository.revision_by_alias(self.session, model.id, ref)
        if revision is None:
            raise NotFound(f"{model.repo_id} has no revision or alias {ref!r}.")
        return revision

    async def _aliases_by_revision(self, model: Model) -> dict[uuid.UUID, list[str]]:
        grouped: dict[uuid.UUID, list[str]] = {}
        for revision_id, name in await repository.alias_names(self.session, model.id):
            grouped.setdefault(revision_id, []).append(name)
        return grouped

    async def _read(self, model: Model, revision: Revision) -> RevisionRead:
        aliases = await self._aliases_by_revision(model)
        return _to_read(model, revision, aliases.get(revision.id, []))


def _to_read(model: Model, revision: Revision, aliases: list[str]) -> RevisionRead:
    return RevisionRead(
        id=revision.id,
        model=model.repo_id,
        sha=revision.sha,
        ref=revision.ref,
        source=revision.source,
        snapshot=revision.snapshot,
        aliases=aliases,
        code_trust=None
        if revision.code_trusted_at is None
        else CodeTrust(
            at=revision.code_trusted_at, by=revision.code_trusted_by or "", reason=revision.code_trust_reason or ""
        ),
        created_at=revision.created_at,
    )


def needs_hub_token(revision: Revision) -> bool:
    """Whether fetching this commit's weights may need a Hub token: gated or private as the Hub said when it was
    synced, or not known (a revision recorded by hand says nothing either way)."""
    snapshot = revision.snapshot
    if snapshot.get("gated") or snapshot.get("private") or snapshot.get("files_gated"):
        return True
    return not (snapshot.get("gated") is False and snapshot.get("private") is False)
