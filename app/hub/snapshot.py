"""From what the Hub said to what Corral records: the revision snapshot, model fields, disagreements."""

from typing import Any, TypeAlias, TypedDict, cast

from corral.documents import HubDisagreement, JsonObject
from corral.hub.client import CHAT_TEMPLATE_FILES, WEIGHT_SUFFIXES, HubFetch
from corral.tables import License, Model

ModelFacts: TypeAlias = dict[str, int | bool | str]  # model field -> value, as the registry accepts it


class LicenseRef(TypedDict):
    id: str | None
    name: str | None
    link: str | None


class FileRecord(TypedDict):
    path: str
    size: int | None
    lfs_sha256: str | None


class SafetensorsRecord(TypedDict):
    parameters: dict[str, int]  # dtype -> count
    total: int
    files: int


class HubSnapshot(TypedDict):
    """What a revision records of the Hub at its commit (stored as the revision's snapshot)."""

    sha: str
    ref: str
    last_modified: str | None
    gated: bool | str
    files_gated: bool
    private: bool
    disabled: bool
    license: LicenseRef
    base_model: list[str]
    library_name: str | None
    pipeline_tag: str | None
    tags: list[str]
    downloads: int | None
    likes: int | None
    files: list[FileRecord]
    weight_bytes: int
    safetensors: SafetensorsRecord | None
    config: JsonObject | None
    architecture: ModelFacts
    chat_template: bool
    refs: dict[str, list[dict[str, str]]]
    notes: list[str]


# config.json key -> model field. Names differ across architectures; the first present wins.
CONFIG_FIELDS: dict[str, tuple[str, ...]] = {
    "hidden_size": ("hidden_size", "d_model", "n_embd"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head"),
    "num_kv_heads": ("num_key_value_heads",),
    "head_dim": ("head_dim",),
    "intermediate_size": ("intermediate_size", "ffn_dim"),
    "context_length": ("max_position_embeddings", "n_positions", "max_sequence_length"),
    "vocab_size": ("vocab_size",),
    "tied_embeddings": ("tie_word_embeddings",),
    "moe_experts_total": ("num_local_experts", "num_experts", "n_routed_experts"),
    "moe_experts_active": ("num_experts_per_tok",),
}
DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "fp8": "fp8"}
SNAPSHOT_CONFIG_KEYS = (
    "model_type",
    "architectures",
    "torch_dtype",
    "dtype",
    "rope_theta",
    *(key for keys in CONFIG_FIELDS.values() for key in keys),
)


def text_config(config: JsonObject) -> JsonObject:
    """Multimodal configs keep the language model's numbers under text_config."""
    nested = config.get("text_config")
    return {**config, **nested} if isinstance(nested, dict) else config


def architecture_from_config(config: JsonObject | None) -> ModelFacts:
    if not config:
        return {}
    flat = text_config(config)
    fields: ModelFacts = {}
    for field, keys in CONFIG_FIELDS.items():
        for key in keys:
            value = flat.get(key)
            if isinstance(value, int) and _usable(field, value):  # bool is an int too
                fields[field] = value
                break
    if "num_kv_heads" not in fields and "num_attention_heads" in fields:
        fields["num_kv_heads"] = fields["num_attention_heads"]  # no GQA key: every head has its own K/V
    dtype = DTYPES.get(str(flat.get("torch_dtype") or flat.get("dtype") or ""))
    if dtype:
        fields["default_dtype"] = dtype
    return fields


def _usable(field: str, value: int) -> bool:
    """A config value is taken only if the registry itself would accept it (a mirror may hold anything)."""
    if field == "tied_embeddings":
        return isinstance(value, bool)
    limit = 1_000_000_000 if field == "context_length" else 10_000_000  # as in app/registry/fields.py
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= limit


def has_chat_template(fetch: HubFetch) -> bool:
    names = {sibling.rfilename for sibling in fetch.info.siblings or []}
    tokenizer = (fetch.info.config or {}).get("tokenizer_config")
    return bool(names & CHAT_TEMPLATE_FILES) or (isinstance(tokenizer, dict) and bool(tokenizer.get("chat_template")))


def _storable(value: Any) -> Any:
    """The Hub's data as PostgreSQL's JSONB can hold it: U+0000 is dropped wherever it appears."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def snapshot(fetch: HubFetch, ref: str) -> HubSnapshot:
    return cast(HubSnapshot, _storable(_snapshot(fetch, ref)))


def _snapshot(fetch: HubFetch, ref: str) -> HubSnapshot:
    info, card = fetch.info, fetch.info.card_data
    siblings = sorted(info.siblings or [], key=lambda item: item.rfilename)
    files = [
        FileRecord(path=sibling.rfilename, size=sibling.size, lfs_sha256=sibling.lfs.sha256 if sibling.lfs else None)
        for sibling in siblings
    ]
    weight_bytes = sum(sibling.size or 0 for sibling in siblings if sibling.rfilename.endswith(WEIGHT_SUFFIXES))
    parameters = fetch.safetensors_parameters
    return {  # a HubSnapshot
        "sha": fetch.sha,
        "ref": ref,
        "last_modified": info.last_modified.isoformat() if info.last_modified else None,
        "gated": info.gated if info.gated else False,
        "files_gated": fetch.files_gated,
        "private": bool(info.private),
        "disabled": bool(info.disabled),
        "license": {
            "id": card.license if card else None,
            "name": card.license_name if card else None,
            "link": card.license_link if card else None,
        },
        "base_model": _as_list(card.base_model if card else None),
        "library_name": info.library_name,
        "pipeline_tag": info.pipeline_tag,
        "tags": list(info.tags or []),
        "downloads": info.downloads,
        "likes": info.likes,
        "files": files,
        "weight_bytes": weight_bytes,
        "safetensors": None
        if parameters is None
        else {
            "parameters": parameters,
            "total": sum(parameters.values()),
            "files": fetch.safetensors_files,
        },
        "config": None
        if fetch.config is None
        else {key: fetch.config[key] for key in SNAPSHOT_CONFIG_KEYS if key in fetch.config}
        | ({"text_config": True} if "text_config" in fetch.config else {}),
        "architecture": architecture_from_config(fetch.config),
        "chat_template": has_chat_template(fetch),
        "refs": fetch.refs,
        "notes": fetch.notes,
    }


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(item) for item in value]


# Bytes per element of safetensors' dtypes; the plain floating-point ones are what an unquantized release holds.
SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
UNQUANTIZED_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


def stored_bytes(safetensors: SafetensorsRecord) -> int | None:
    """What a quantized checkpoint's tensors take as stored (fp8 or packed integers, their scales, the layers kept
    in 16 bits): None for a plain floating-point one, sized from its parameters at its dtype, or an unknown dtype."""
    parameters = safetensors["parameters"]
    if not set(parameters) - UNQUANTIZED_DTYPES or not set(parameters) <= SAFETENSORS_DTYPE_BYTES.keys():
        return None
    return sum(count * SAFETENSORS_DTYPE_BYTES[dtype] for dtype, count in parameters.items())


def hub_facts(record: HubSnapshot) -> ModelFacts:
    """The model fields a snapshot can supply: architecture, exact parameters, context, and the size of a
    quantized checkpoint's weights as stored."""
    facts = dict(record["architecture"])
    if record["safetensors"]:
        facts["parameter_count"] = record["safetensors"]["total"]
        stored = stored_bytes(record["safetensors"])
        if stored is not None:
            facts["stored_weight_bytes"] = stored
    return facts


def disagreements(model: Model, license: License | None, record: HubSnapshot) -> list[HubDisagreement]:
    """Where the Hub and the registry differ on parameters, context length or licence. Shown, never merged."""
    found = []
    facts = hub_facts(record)
    for field in ("parameter_count", "context_length"):
        ours, theirs = getattr(model, field), facts.get(field)
        if ours is not None and theirs is not None and ours != theirs:
            found.append(HubDisagreement(field=field, registry=ours, hub=theirs))
    hub_license = record["license"]
    hub_id = hub_license["name"] if hub_license["id"] == "other" and hub_license["name"] else hub_license["id"]
    if license is not None and hub_id:
        ours_id = license.hub_license_name if license.hub_license_id == "other" else license.hub_license_id
        if ours_id and ours_id != hub_id:
            found.append(HubDisagreement(field="license", registry=ours_id, hub=hub_id))
    return found
