"""Suites: read from evals/suites/*.yaml, versioned by content, every version kept in the database."""

import hashlib
import json
from importlib.resources import files
from pathlib import Path

import yaml
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.errors import NotFound
from corral.pagination import PageRequest, paginate
from corral.suites import repository
from corral.suites.schemas import SuiteDefinition, SuiteRead, SuiteSummary, SuiteVersionRead
from corral.tables import SuiteVersion

SUITES_DIR = Path(str(files("corral_runner"))) / "suites"


class SuiteFileError(Exception):
    """A suite file that does not parse or validate; the message names the file and the problem."""


def read_suite_files(directory: Path = SUITES_DIR) -> list[SuiteDefinition]:
    definitions = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            definition = SuiteDefinition.model_validate(yaml.safe_load(path.read_text()))
        except (yaml.YAMLError, ValidationError) as exc:
            raise SuiteFileError(f"{path.name}: {exc}") from None
        if path.stem != definition.name:
            raise SuiteFileError(f"{path.name}: the file must be named after its suite ({definition.name}.yaml)")
        definitions.append(definition)
    return definitions


def content_version(definition: SuiteDefinition) -> str:
    """The hash of the parsed definition, so comments and layout do not make a new version."""
    canonical = json.dumps(definition.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


async def load_suites(session: AsyncSession, directory: Path = SUITES_DIR) -> dict[str, str]:
    """Record each suite's current version (new ones added, old ones kept); returns name -> latest version."""
    latest: dict[str, str] = {}
    for definition in read_suite_files(directory):
        version = content_version(definition)
        latest[definition.name] = version
        existing = await repository.version(session, definition.name, version)
        if existing is not None and existing.latest:
            continue
        # A new version, or the file went back to an earlier one.
        new = (
            SuiteVersion(
                name=definition.name, version=version, latest=True, definition=definition.model_dump(mode="json")
            )
            if existing is None
            else None
        )
        await repository.make_latest(session, definition.name, existing, new)
    return latest


def _summary(row: SuiteVersion) -> SuiteSummary:
    definition = SuiteDefinition.model_validate(row.definition)
    return SuiteSummary(
        name=row.name,
        version=row.version,
        title=definition.title,
        description=definition.description,
        tasks=[task.name for task in definition.tasks],
        shards=len(definition.shards),
        context_tokens=definition.context_tokens,
        created_at=row.created_at,
    )


def _version_read(row: SuiteVersion) -> SuiteVersionRead:
    return SuiteVersionRead(
        name=row.name, version=row.version, latest=row.latest, definition=row.definition, created_at=row.created_at
    )


class SuiteService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_page(self, *, sort: str, page: PageRequest) -> tuple[list[SuiteSummary], str | None]:
        rows, cursor = await paginate(
            self.session,
            repository.latest_versions(),
            sort=sort,
            columns={"name": SuiteVersion.name},
            id_column=SuiteVersion.id,
            page=page,
        )
        return [_summary(row) for row in rows], cursor

    async def get(self, name: str) -> SuiteRead:
        rows = await repository.versions(self.session, name)
        current = next((row for row in rows if row.latest), None)
        if current is None:
            raise NotFound(f"No suite named {name!r}.")
        return SuiteRead(**_version_read(current).model_dump(), versions=[row.version for row in rows])

    async def get_version(self, name: str, version: str) -> SuiteVersionRead:
        row = await repository.version(self.session, name, version)
        if row is None:
            raise NotFound(f"Suite {name!r} has no version {version!r}.")
        return _version_read(row)
