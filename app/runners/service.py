"""Runner machines: created by an admin or self-registered with a single-use token; tokens bound to them."""

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from corral.errors import Conflict, NotFound, Unauthorized
from corral.pagination import PageRequest, SortColumn, paginate
from corral.runners import repository
from corral.runners.schemas import (
    ONLINE_WITHIN_SECONDS,
    Capabilities,
    RegistrationTokenCreate,
    RegistrationTokenCreated,
    RunnerCreate,
    RunnerRead,
    RunnerRegister,
    RunnerReport,
    RunnerUpdate,
    RunnerWithToken,
)
from corral.tables import RegistrationToken, Runner
from corral.tables.base import utcnow
from corral.tokens.credentials import REGISTRATION_PREFIX, REGISTRATION_SHAPE, generate_token, secret_matches
from corral.tokens.repository import TokenRepository
from corral.tokens.service import TokenService
from corral.wire.enums import RunnerState, Scope

SORT_COLUMNS: dict[str, SortColumn] = {"name": Runner.name, "created_at": Runner.created_at}


def to_read(runner: Runner) -> RunnerRead:
    seen = runner.last_contact_at
    online = seen is not None and utcnow() - seen <= timedelta(seconds=ONLINE_WITHIN_SECONDS)
    fields = {name: getattr(runner, name) for name in RunnerRead.model_fields if name != "online"}
    return RunnerRead(**fields, online=online)


class RunnerService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, body: RunnerCreate, *, extra_labels: list[str] | None = None) -> RunnerWithToken:
        if await repository.name_taken(self.session, body.name):
            raise Conflict(f"A runner named {body.name!r} exists already.")
        capabilities = body.model_dump(include=set(Capabilities.model_fields))
        capabilities["labels"] = sorted(set(capabilities["labels"]) | set(extra_labels or []))
        runner = Runner(name=body.name, state=RunnerState.ACTIVE, **capabilities)
        self.session.add(runner)
        await self.session.flush()
        token = await TokenService(self.session).issue(
            name=f"runner {body.name}"[:100], scope=Scope.RUNNER, runner_id=runner.id
        )
        return RunnerWithToken(runner=to_read(runner), token=token.token)

    async def create_registration_token(self, body: RegistrationTokenCreate) -> RegistrationTokenCreated:
        new = generate_token(REGISTRATION_PREFIX)
        row = RegistrationToken(
            key_id=new.key_id,
            secret_hash=new.secret_hash,
            labels=body.labels,
            expires_at=utcnow() + timedelta(seconds=body.expires_in_seconds),
        )
        self.session.add(row)
        await self.session.flush()
        return RegistrationTokenCreated(id=row.id, token=new.plaintext, expires_at=row.expires_at, labels=row.labels)

    async def register(self, body: RunnerRegister) -> RunnerWithToken:
        """Exchange a registration token (once) for a runner and its own token."""
        match = REGISTRATION_SHAPE.match(body.registration_token)
        row = await repository.registration_token(self.session, match.group(1)) if match is not None else None
        if not secret_matches(row.secret_hash if row else None, body.registration_token) or row is None:
            raise Unauthorized("The registration token is not valid.")
        if row.used_at is not None:
            raise Unauthorized("The registration token has been used already.")
        if row.expires_at <= utcnow():
            raise Unauthorized("The registration token has expired.")
        created = await self.create(
            RunnerCreate.model_validate(body.model_dump(exclude={"registration_token"})), extra_labels=row.labels
        )
        # Of two machines racing with one token, one wins and the other's transaction fails.
        if not await repository.use_registration_token(self.session, row.id, created.runner.id, utcnow()):
            raise Unauthorized("The registration token has been used already.")
        return created

    async def get(self, runner_id: uuid.UUID) -> Runner:
        runner = await self.session.get(Runner, runner_id)
        if runner is None or runner.deleted_at is not None:
            raise NotFound(f"No runner with id {runner_id}.")
        return runner

    async def list_page(
        self, *, state: RunnerState | None, label: str | None, sort: str, page: PageRequest
    ) -> tuple[list[RunnerRead], str | None]:
        runners, cursor = await paginate(
            self.session,
            repository.listing(state, label),
            sort=sort,
            columns=SORT_COLUMNS,
            id_column=Runner.id,
            page=page,
        )
        return [to_read(runner) for runner in runners], cursor

    async def update(self, runner_id: uuid.UUID, body: RunnerUpdate) -> RunnerRead:
        runner = await self.get(runner_id)
        for field, value in body.model_dump(exclude_unset=True).items():
            setattr(runner, field, value)
        await self.session.flush()
        return to_read(runner)

    async def delete(self, runner_id: uuid.UUID) -> None:
        """Hide the runner and revoke its tokens at once; the row stays for the record."""
        runner = await self.get(runner_id)
        runner.deleted_at = utcnow()
        await self._revoke_tokens(runner.id)
        await self.session.flush()

    async def rotate_token(self, runner_id: uuid.UUID) -> RunnerWithToken:
        runner = await self.get(runner_id)
        await self._revoke_tokens(runner.id)
        token = await TokenService(self.session).issue(
            name=f"runner {runner.name}"[:100], scope=Scope.RUNNER, runner_id=runner.id
        )
        return RunnerWithToken(runner=to_read(runner), token=token.token)

    async def verify(self, runner_id: uuid.UUID, report: RunnerReport) -> RunnerRead:
        """The runner checks in: the hardware it reports is recorded (labels and limits stay the admin's)."""
        runner = await self.get(runner_id)
        for field, value in report.model_dump(exclude_unset=True).items():
            setattr(runner, field, value)
        runner.last_contact_at = utcnow()
        await self.session.flush()
        return to_read(runner)

    async def _revoke_tokens(self, runner_id: uuid.UUID) -> None:
        await TokenRepository(self.session).revoke_runner_tokens(runner_id, utcnow())
