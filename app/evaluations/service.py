"""Evaluation requests: resolve the revision and suite, dedupe by config hash, size, match and enqueue; cancel."""

import hashlib
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from corral.clock import SYSTEM_CLOCK, Clock
from corral.config import Settings
from corral.db import release_connection, serialize
from corral.documents import StoredRequirements
from corral.errors import Conflict, NotFound, UnprocessableEntity
from corral.evaluations import repository, state
from corral.evaluations.identity import EvaluationConfig, config_hash
from corral.evaluations.requirements import evaluation_memory
from corral.evaluations.schemas import EvaluationCreate, EvaluationRead
from corral.evaluations.views import EvaluationViews, closest_miss
from corral.evaluations.wakeups import QueueSignal, announce_work
from corral.hub.client import HubError, HubNotFound
from corral.hub.errors import hub_problem, refuse_when_the_hub_is_full
from corral.hub.sync import HubSync
from corral.registry.repository import model_by_repo_id
from corral.registry.revisions.service import RevisionService, needs_hub_token
from corral.runners.matching import Need
from corral.runners.repository import capable, registered_runners
from corral.security.access import Principal
from corral.suites import repository as suites
from corral.suites.schemas import SuiteDefinition
from corral.tables import Evaluation, EvaluationJob, Model, Revision, SuiteVersion
from corral.wire.enums import EvaluationState, JobState
from corral.wire.protocol import TRUSTED_CODE_LABEL

# Evaluations an identical request is answered with; failed and canceled ones do not block a new run.
DEDUPE_STATES = (EvaluationState.QUEUED, EvaluationState.RUNNING, EvaluationState.SUCCEEDED)


class EvaluationService:
    def __init__(self, session: AsyncSession, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.session = session
        self.settings = settings
        self.clock = clock
        self.views = EvaluationViews(session, clock)

    async def request(
        self,
        body: EvaluationCreate,
        *,
        principal: Principal,
        idempotency_key: str | None,
        hub: HubSync,
        signal: QueueSignal,
    ) -> tuple[EvaluationRead, bool]:
        """Returns the evaluation and whether this request created it."""
        if body.ref is not None:  # a ref is resolved on the Hub: refused at once if it has no slot free
            refuse_when_the_hub_is_full(hub.client)
        fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
        if idempotency_key is not None and (earlier := await self._replay(principal, idempotency_key, fingerprint)):
            return earlier, False
        model = await model_by_repo_id(self.session, body.model)
        if model is None:
            raise UnprocessableEntity(f"No model {body.model!r} is registered.", field="model")
        suite_row = await self._suite(body.suite, body.suite_version)
        revision = await self._resolve_revision(model, body, hub)
        suite = SuiteDefinition.model_validate(suite_row.definition)
        harness_version = body.harness_version or self.settings.harness_version
        config = EvaluationConfig(
            model=model.repo_id,
            revision=revision.sha,
            suite=suite_row.name,
            suite_version=suite_row.version,
            harness_version=harness_version,
            backend=body.backend,
            precision=body.precision,
            apply_chat_template=body.apply_chat_template,
            fewshot_as_multiturn=body.fewshot_as_multiturn,
            num_fewshot=body.num_fewshot,
            limit=body.limit,
            seed=body.seed,
            gen_kwargs=(body.gen_kwargs.as_arguments() or None) if body.gen_kwargs is not None else None,
        )
        labels = set(body.labels)
        if revision.code_trusted_at is not None:
            # The admin's trust in this commit's code: part of what the scores depend on, and only runners
            # labelled for it may run it.
            config["trust_remote_code"] = True
            labels.add(TRUSTED_CODE_LABEL)
        digest = config_hash(config)
        # Concurrent twins (same config, or a CI retry with the same key) must see each other's evaluation.
        if idempotency_key is not None:
            await serialize(self.session, f"idempotency:{principal.token_id}:{idempotency_key}")
            if earlier := await self._replay(principal, idempotency_key, fingerprint):
                return earlier, False
        await serialize(self.session, f"config:{digest}")
        if not body.force:
            existing = await repository.newest_with_config(self.session, digest, DEDUPE_STATES)
            if existing is not None:
                return await self.views.read(existing.id), False

        memory = evaluation_memory(model, precision=body.precision, suite_context_tokens=suite.context_tokens)
        need = Need(memory.total_bytes, memory.device_bytes, body.backend, harness_version, tuple(sorted(labels)))
        runners = await registered_runners(self.session)
        if not capable(runners, need) and not body.queue_without_runner:
            raise Conflict(
                "No registered runner could ever hold this evaluation: " + closest_miss(runners, need),
                requirements={
                    "memory_bytes": need.memory_bytes,
                    "device_bytes": need.device_bytes,
                    "backend": need.backend,
                    "harness_version": need.harness_version,
                    "labels": list(need.labels),
                },
            )
        now = self.clock.now()
        evaluation = Evaluation(
            model_id=model.id,
            revision_id=revision.id,
            suite_version_id=suite_row.id,
            config_hash=digest,
            config=config,
            batch_size=str(body.batch_size),
            priority=body.priority,
            labels=list(need.labels),
            state=EvaluationState.QUEUED,
            requirements=StoredRequirements(
                memory_bytes=memory.total_bytes,
                device_bytes=memory.device_bytes,
                context_tokens=memory.context_tokens or suite.context_tokens,
                notes=list(memory.notes),
                needs_hub_token=needs_hub_token(revision),
            ),
            requested_by_token_id=principal.token_id,
            requested_by=principal.name,
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint,
        )
        self.session.add(evaluation)
        await self.session.flush()
        for index, shard in enumerate(suite.shards):
            self.session.add(
                EvaluationJob(
                    evaluation_id=evaluation.id,
                    shard_index=index,
                    tasks=list(shard),
                    state=JobState.QUEUED,
                    priority=body.priority,
                    backend=body.backend,
                    harness_version=harness_version,
                    labels=list(need.labels),
                    required_memory_bytes=memory.total_bytes,
                    required_device_bytes=memory.device_bytes,
                    queued_at=now,
                    available_at=now,
                )
            )
        await self.session.flush()
        await announce_work(self.session, signal, len(suite.shards))
        return await self.views.read(evaluation.id), True

    async def cancel(self, evaluation_id: uuid.UUID, principal: Principal) -> EvaluationRead:
        """Queued jobs cancel now; running ones hear it from their next heartbeat."""
        await state.cancel(self.session, evaluation_id, principal.name, self.clock.now())
        return await self.views.read(evaluation_id)

    async def _resolve_revision(self, model: Model, body: EvaluationCreate, hub: HubSync) -> Revision:
        revisions = RevisionService(self.session)
        if body.ref is not None:
            await release_connection(self.session)  # no connection held while the Hub takes its time
            deadline = self.settings.hub_request_deadline_seconds
            try:
                sha = (await hub.sync(model.repo_id, body.ref, ref=True, deadline_seconds=deadline)).sha
            except HubNotFound as error:
                raise UnprocessableEntity(error.message, field="ref") from None
            except HubError as error:
                raise hub_problem(error) from None  # the Hub unreachable or failing: 502/503 as for any sync
            revision = await revisions.by_sha(model, sha)
            field, label = "ref", body.ref
        elif body.alias is not None:
            try:
                revision = await revisions.resolve(model, body.alias)
            except NotFound:
                revision = None
            field, label = "alias", body.alias
        else:
            assert body.revision is not None  # the schema asks for exactly one of the three
            revision = await revisions.by_sha(model, body.revision)
            field, label = "revision", body.revision
        if revision is None:
            raise UnprocessableEntity(
                f"{model.repo_id} has no recorded revision {label!r}: sync it from the Hub or record it first.",
                field=field,
            )
        return revision

    async def _suite(self, name: str, version: str | None) -> SuiteVersion:
        row = await suites.version(self.session, name, version)
        if row is None:
            known = await suites.names(self.session)
            if version is not None and name in known:
                raise UnprocessableEntity(f"Suite {name!r} has no version {version!r}.", field="suite_version")
            raise UnprocessableEntity(f"No suite {name!r}; known suites: {', '.join(known) or 'none'}.", field="suite")
        return row

    async def _replay(self, principal: Principal, key: str, fingerprint: str) -> EvaluationRead | None:
        """The evaluation this caller's Idempotency-Key created, if any; the key with another body is a 422."""
        earlier = await repository.by_idempotency_key(self.session, principal.token_id, key)
        if earlier is None:
            return None
        if earlier.request_fingerprint != fingerprint:
            raise UnprocessableEntity(
                "This Idempotency-Key was used with another request body.", field="Idempotency-Key", location="header"
            )
        return await self.views.read(earlier.id)
