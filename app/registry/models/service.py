import uuid
from datetime import date
from typing import TypedDict

from sqlalchemy.ext.asyncio import AsyncSession

from corral.errors import Conflict, UnprocessableEntity
from corral.fields import MAX_PARAMETERS
from corral.hardware import fit
from corral.hardware.estimator import architecture_of, stored_precision
from corral.hardware.fit import DEFAULT_CONTEXT_TOKENS
from corral.hardware.parameters import active_parameter_count, parameter_count, quantization_problem, stored_weights
from corral.hardware.schemas import HardwareRequirements
from corral.hardware.service import requirements_report
from corral.pagination import PageRequest, SortColumn, SortKey, paginate
from corral.registry import repository
from corral.registry.licenses.schemas import LicenseCheck, UseDescription
from corral.registry.licenses.terms import check_use
from corral.registry.models.schemas import LineageEntry, LineageRead, ModelCreate, ModelRead, ModelUpdate, hub_state
from corral.registry.models.search import ModelFilters, search_statement
from corral.registry.repository import model_by_repo_id, require_model, require_slug
from corral.runners.matching import Capacity, Need
from corral.runners.repository import registered_runners
from corral.tables import Family, License, Model
from corral.wire.enums import Lineage

SORT_COLUMNS: dict[str, SortColumn] = {
    "repo_id": Model.repo_id,
    "created_at": Model.created_at,
    "release_date": SortKey(Model.release_date, nulls_as=date.min),
    "parameter_count": SortKey(Model.parameter_count, nulls_as=0),
}
MAX_LINEAGE_DEPTH = 32


class References(TypedDict, total=False):
    """The records a model names by key (slugs, a repo id); absent: left as they are, None: cleared."""

    family: str | None
    license: str | None
    base_model: str | None


ARCHITECTURE_INPUTS = frozenset(
    {
        "hidden_size",
        "num_layers",
        "num_attention_heads",
        "num_kv_heads",
        "intermediate_size",
        "vocab_size",
        "tied_embeddings",
        "moe_experts_total",
        "moe_experts_active",
        "components",
    }
)
# What complete_architecture derives from those inputs: recomputed when an input changes, unless stated with it.
DERIVED_FIGURES = ("head_dim", "parameter_count", "active_parameters", "stored_weight_bytes")


def effective_license(model: Model) -> License | None:
    return model.license or (model.family.license if model.family else None)


def to_read(model: Model) -> ModelRead:
    license = effective_license(model)
    plain = {
        name: getattr(model, name)
        for name in ModelRead.model_fields
        if name not in ("family", "license", "license_inherited", "base_model", "hub")
    }
    return ModelRead(
        **plain,
        family=model.family.slug if model.family else None,
        license=license.slug if license else None,
        license_inherited=model.license is None and license is not None,
        base_model=model.base_model.repo_id if model.base_model else None,
        hub=hub_state(model),
    )


class ModelService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, repo_id: str) -> ModelRead:
        return to_read(await require_model(self.session, repo_id))

    async def create(self, body: ModelCreate) -> ModelRead:
        if await model_by_repo_id(self.session, body.repo_id) is not None:
            raise Conflict(f"Model {body.repo_id!r} is registered already.")
        values = body.model_dump(exclude={"family", "license", "base_model"})
        model = Model(**values)
        model.display_name = body.display_name or body.repo_id.split("/", 1)[1]
        references = References(family=body.family, license=body.license, base_model=body.base_model)
        await self._apply_references(model, references)
        if model.base_model_id is not None and model.lineage is None:
            model.lineage = Lineage.FINETUNE
        _check_components(model)
        complete_architecture(model)
        self.session.add(model)
        await self.session.flush()
        return await self.get(body.repo_id)

    async def update(self, repo_id: str, body: ModelUpdate) -> ModelRead:
        model = await require_model(self.session, repo_id)
        changes = body.model_dump(exclude_unset=True)
        references = References()
        for key in ("family", "license", "base_model"):
            if key in changes:
                references[key] = changes.pop(key)
        # Derived figures follow their inputs: a changed shape or components recompute them (DERIVED_FIGURES)
        # unless the same request states them.
        if changes.keys() & ARCHITECTURE_INPUTS:
            for derived in DERIVED_FIGURES:
                if derived not in changes:
                    changes[derived] = None
        for field, value in changes.items():
            setattr(model, field, value)
        await self._apply_references(model, references)
        if model.lineage is not None and model.base_model_id is None:
            raise UnprocessableEntity("lineage needs base_model.", field="lineage")
        _check_heads(model)
        _check_components(model)
        complete_architecture(model)
        await self.session.flush()
        self.session.expire(model)
        return await self.get(repo_id)

    async def list_page(
        self, filters: ModelFilters, *, sort: str, page: PageRequest
    ) -> tuple[list[ModelRead], str | None]:
        models, cursor = await paginate(
            self.session, search_statement(filters), sort=sort, columns=SORT_COLUMNS, id_column=Model.id, page=page
        )
        return [to_read(model) for model in models], cursor

    async def lineage(self, repo_id: str) -> LineageRead:
        model = await require_model(self.session, repo_id)
        ancestors: list[LineageEntry] = []
        current = model
        while current.base_model_id is not None and len(ancestors) < MAX_LINEAGE_DEPTH:
            base = await repository.model_by_id(self.session, current.base_model_id)
            ancestors.append(LineageEntry(repo_id=base.repo_id, lineage=current.lineage, depth=len(ancestors) + 1))
            current = base
        descendants: list[LineageEntry] = []
        frontier, depth, seen = [model.id], 0, {model.id}
        while frontier and depth < MAX_LINEAGE_DEPTH:
            depth += 1
            children = await repository.derived_from(self.session, frontier)
            frontier = [child.id for child in children if child.id not in seen]
            seen.update(frontier)
            descendants += [LineageEntry(repo_id=c.repo_id, lineage=c.lineage, depth=depth) for c in children]
        return LineageRead(model=model.repo_id, ancestors=ancestors, descendants=descendants)

    async def license_check(self, repo_id: str, use: UseDescription) -> LicenseCheck:
        model = await require_model(self.session, repo_id)
        license = effective_license(model)
        if license is None:
            raise Conflict(f"Model {repo_id!r} has no licence recorded, neither its own nor its family's.")
        multimodal = use.multimodal if use.multimodal is not None else any(m != "text" for m in model.modalities)
        return check_use(license, use, multimodal=multimodal)

    async def requirements(
        self, repo_id: str, *, precision: str | None, kv_precision: str | None, context_tokens: int | None, batch: int
    ) -> HardwareRequirements:
        model = await require_model(self.session, repo_id)
        precision = precision or stored_precision(model.default_dtype)
        stored = fit.stored_release(model.default_dtype, model.stored_weight_bytes)
        arch = architecture_of(model)
        if arch is None or model.parameter_count is None:
            missing = [
                name
                for name in ("parameter_count", "hidden_size", "num_layers", "num_attention_heads", "num_kv_heads")
                if getattr(model, name) is None
            ]
            raise Conflict(
                f"Model {repo_id!r} lacks {', '.join(missing)}: its requirements cannot be computed.", missing=missing
            )
        notes = []
        if model.unverified:
            notes.append(f"Unverified facts in this model's record: {', '.join(model.unverified)}.")
        asked = context_tokens or model.context_length or DEFAULT_CONTEXT_TOKENS
        tokens = fit.context_for(asked, model.context_length)
        if tokens < asked:
            notes.append(f"Context capped at the model's own {tokens} tokens (asked: {asked}).")
        report = requirements_report(
            model=model.repo_id,
            arch=arch,
            parameters=model.parameter_count,
            parameters_source="recorded",
            precision=precision,
            kv_precision=kv_precision,
            context_tokens=tokens,
            batch=batch,
            notes=notes,
            stored=stored,
        )
        need = Need(
            report.inference.total.bytes, report.largest_piece.bytes, backend="hf", harness_version="", labels=()
        )
        fitting = [
            runner.name
            for runner in await registered_runners(self.session)
            if Capacity.of(runner).memory_shortfalls(need) == []
        ]
        return report.model_copy(update={"runners_that_fit": sorted(fitting)})

    async def _apply_references(self, model: Model, references: References) -> None:
        if "family" in references:
            slug = references["family"]
            model.family_id = (
                None if slug is None else (await require_slug(self.session, Family, slug, referenced=True)).id
            )
        if "license" in references:
            slug = references["license"]
            model.license_id = (
                None if slug is None else (await require_slug(self.session, License, slug, referenced=True)).id
            )
        if "base_model" in references:
            model.base_model_id = await self._base_model_id(model, references["base_model"])

    async def _base_model_id(self, model: Model, repo_id: str | None) -> uuid.UUID | None:
        if repo_id is None:
            return None
        base = await model_by_repo_id(self.session, repo_id)
        if base is None:
            raise UnprocessableEntity(f"Base model {repo_id!r} is not registered.", field="base_model")
        # Walk up from the new base: meeting this model there would make lineage a cycle.
        current: Model | None = base
        for _ in range(MAX_LINEAGE_DEPTH):
            if current is None:
                break
            if model.id is not None and current.id == model.id:
                raise UnprocessableEntity(
                    f"{repo_id!r} derives from this model: lineage cannot loop.", field="base_model"
                )
            if current.base_model_id is None:
                break
            current = await self.session.get(Model, current.base_model_id)
        return base.id


def _check_heads(model: Model) -> None:
    """The schema checks a body's own pair; this checks the pair the update leaves on the record."""
    if model.num_attention_heads and model.num_kv_heads and model.num_attention_heads % model.num_kv_heads:
        raise UnprocessableEntity("num_attention_heads must be a multiple of num_kv_heads.", field="num_kv_heads")


def _check_components(model: Model) -> None:
    """The components must fit the architecture they extend: a quantization the arithmetic can count, experts
    only with a design that lays them out."""
    arch, components = architecture_of(model), model.components
    if arch is None or components is None:
        return
    if not arch.is_dense and components["design"] != "llama4":
        raise UnprocessableEntity(
            f"A mixture of experts is laid out by design 'llama4', not {components['design']!r}.", field="components"
        )
    if components["design"] == "mllama" and components["cross_attention_layers"] >= arch.num_layers:
        raise UnprocessableEntity(
            "components.cross_attention_layers must be fewer than num_layers (which counts them).", field="components"
        )
    problem = quantization_problem(arch, components)
    if problem is not None:
        raise UnprocessableEntity(f"{problem}.", field="components")


def complete_architecture(model: Model) -> None:
    """Fill what follows by arithmetic where it is not recorded: head_dim, the parameter count (every design the
    arithmetic knows), the active parameters of a mixture of experts, and the bytes a quantized release stores."""
    if model.head_dim is None and model.hidden_size and model.num_attention_heads:
        model.head_dim = model.hidden_size // model.num_attention_heads
    arch = architecture_of(model)
    if arch is None or arch.intermediate_size is None or arch.vocab_size is None:
        return
    components = model.components
    if not arch.is_dense and (components is None or components["design"] != "llama4"):
        return  # the experts' layout is unknown
    if model.parameter_count is None:
        counted = parameter_count(arch, components)
        if counted > MAX_PARAMETERS:  # each size within bounds, their product beyond what a model may have
            raise UnprocessableEntity(
                f"This architecture implies {counted:,} parameters, more than the {MAX_PARAMETERS:,} a model may "
                "have: check its sizes.",
                field="parameter_count",
            )
        model.parameter_count = counted
    if model.active_parameters is None and model.moe_experts_active:
        model.active_parameters = active_parameter_count(arch, components, model.moe_experts_active)
    stored = stored_weights(arch, components, model.parameter_count)
    if model.stored_weight_bytes is None and stored is not None:
        model.stored_weight_bytes = stored.bytes
