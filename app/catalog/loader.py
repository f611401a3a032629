"""Loads the shipped Llama catalog (llama.yaml) through the registry services: validated, idempotent.

A second load changes nothing; after an upgrade that corrects a fact in the file, a load updates exactly
the records whose catalog values differ.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from corral.hardware.estimator import Architecture
from corral.hardware.parameters import active_parameter_count, parameter_count, stored_weights
from corral.registry.families.schemas import FamilyCreate, FamilyUpdate
from corral.registry.families.service import FamilyService
from corral.registry.licenses.schemas import LicenseCreate, LicenseRead, LicenseUpdate
from corral.registry.licenses.service import LicenseService
from corral.registry.models.schemas import ModelCreate, ModelUpdate
from corral.registry.models.service import ModelService
from corral.registry.repository import by_slug, model_by_repo_id
from corral.tables import Family, License

CATALOG = Path(__file__).with_name("llama.yaml")
# Keys that shape the catalog file itself, not model fields.
_PRESET_ONLY = {"arch", "legacy_rotary_buffers"}


class CatalogLoad(BaseModel):
    created: dict[str, int]
    updated: dict[str, int]
    unchanged: dict[str, int]


@cache
def catalog_data(path: Path = CATALOG) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def model_entries(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each model with its architecture preset merged in (the entry's own values win; its components are merged
    into the preset's, so an FP8 release adds its quantization to its model's components)."""
    presets = data.get("architectures", {})
    entries = []
    for entry in data["models"]:
        preset = presets.get(entry.get("arch"), {})
        merged = {**preset, **entry}
        if "components" in preset and "components" in entry:
            merged["components"] = {**preset["components"], **entry["components"]}
        entries.append(merged)
    return entries


@dataclass(frozen=True)
class CatalogFigures:
    """What an entry's architecture implies by arithmetic."""

    parameters: int
    active_parameters: int | None
    stored_weight_bytes: int | None


def arithmetic_figures(entry: dict[str, Any]) -> CatalogFigures | None:
    """The exact counts an entry's architecture and components imply (None while a size they need is missing)."""
    needed = ("hidden_size", "num_layers", "num_attention_heads", "num_kv_heads", "intermediate_size", "vocab_size")
    if any(entry.get(key) is None for key in needed):
        return None
    arch = Architecture(
        **{key: entry[key] for key in needed},
        head_dim=entry.get("head_dim"),
        tied_embeddings=bool(entry.get("tied_embeddings")),
        moe_experts_total=entry.get("moe_experts_total"),
    )
    components = entry.get("components")
    if not arch.is_dense and components is None:
        return None
    parameters = parameter_count(arch, components, legacy_rotary_buffers=bool(entry.get("legacy_rotary_buffers")))
    stored = stored_weights(arch, components, parameters)
    return CatalogFigures(
        parameters=parameters,
        active_parameters=active_parameter_count(arch, components, entry.get("moe_experts_active") or 1),
        stored_weight_bytes=stored.bytes if stored else None,
    )


def _differs(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return any(_plain(current.get(key)) != _plain(value) for key, value in wanted.items())


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else getattr(value, "value", value)


async def load_catalog(session: AsyncSession, path: Path = CATALOG) -> CatalogLoad:
    data = catalog_data(path)
    created: Counter[str] = Counter()
    updated: Counter[str] = Counter()
    unchanged: Counter[str] = Counter()

    licenses = LicenseService(session)
    for entry in data["licenses"]:
        body = LicenseCreate.model_validate(entry)
        existing = await by_slug(session, License, body.slug)
        if existing is None:
            await licenses.create(body)
            created["licenses"] += 1
        elif _differs(LicenseRead.model_validate(existing).model_dump(), body.model_dump()):
            await licenses.update(body.slug, LicenseUpdate.model_validate(body.model_dump(exclude={"slug"})))
            updated["licenses"] += 1
        else:
            unchanged["licenses"] += 1

    families = FamilyService(session)
    for entry in data["families"]:
        family = FamilyCreate.model_validate(entry)
        if await by_slug(session, Family, family.slug) is None:
            await families.create(family)
            created["families"] += 1
        elif _differs((await families.get(family.slug)).model_dump(), family.model_dump()):
            await families.update(family.slug, FamilyUpdate.model_validate(family.model_dump(exclude={"slug"})))
            updated["families"] += 1
        else:
            unchanged["families"] += 1

    models = ModelService(session)
    for entry in model_entries(data):
        fields = {key: value for key, value in entry.items() if key not in _PRESET_ONLY}
        model = ModelCreate.model_validate(fields)
        if await model_by_repo_id(session, model.repo_id) is None:
            await models.create(model)
            created["models"] += 1
            continue
        wanted = model.model_dump(exclude={"repo_id"}, exclude_unset=True)
        if _differs((await models.get(model.repo_id)).model_dump(), wanted):
            await models.update(model.repo_id, ModelUpdate.model_validate(wanted))
            updated["models"] += 1
        else:
            unchanged["models"] += 1
    return CatalogLoad(created=dict(created), updated=dict(updated), unchanged=dict(unchanged))
