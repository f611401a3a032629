"""How the pages write numbers: human parameter counts (70.6 B), sizes people type (8B, 405M), GiB, scores."""

import math
import re
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module at start-up: no schemas loaded for a type
    from corral.registry.models.schemas import ModelRead

# Decimal units, as model names use them (Llama 3.1 8B has 8.03e9 parameters).
_UNITS = (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3))
_SIZE = re.compile(r"^(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmbtKMBT]?)$")
_MULTIPLIERS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
GIB = 2**30


def parameters(count: int | None) -> str:
    """70553706496 -> '70.6 B'; None -> '—'."""
    if count is None:
        return "—"
    for unit, size in _UNITS:
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return str(count)


def _read_size(text: str | None) -> tuple[int, int, str] | None:
    """'1.5B' -> (1500000000, 100000000, '1.5B'): the count, the unit of its last written digit, the text."""
    cleaned = (text or "").strip().replace(",", "").replace("_", "")
    if not cleaned:
        return None
    match = _SIZE.match(cleaned)
    if match is None:
        raise ValueError(f"cannot read {text!r} as a size: write e.g. 8B, 1.5B, 405M or 8000000000")
    whole, _, fraction = match["number"].partition(".")
    multiplier = _MULTIPLIERS[match["unit"].lower()]
    if len(fraction) >= len(str(multiplier)):
        raise ValueError(f"cannot read {text!r} as a size: a count of parameters is a whole number")
    # Integer arithmetic on the digits: float("1.1") * 1e9 would give 1100000000.0000002.
    step = multiplier // 10 ** len(fraction)
    return int(whole) * multiplier + (int(fraction) * step if fraction else 0), step, cleaned


def parse_parameters(text: str | None) -> int | None:
    """A size as people type it ('8B', '8b', '1.5B', '405M', '8000000000', '8,000,000,000') -> the count it
    names (8B = 8,000,000,000). Empty -> None; anything else raises ValueError with what to write instead."""
    size = _read_size(text)
    return None if size is None else size[0]


def parameter_limit(text: str | None) -> tuple[int, str] | None:
    """'max parameters' as people type it -> (the most parameters a model may have, what that means in words).

    A size with a unit reads as models are named, which truncate their count: '8B' keeps Llama 3.1 8B
    (8.03 B) and stops below 9 B, '70B' keeps 70.6 B, '1.5B' stops below 1.6 B, '405M' below 406 M. A plain
    count ('8000000000') is exact. Empty -> None; anything else raises ValueError."""
    size = _read_size(text)
    if size is None:
        return None
    value, step, written = size
    if step == 1:
        return value, f"at most {value:,} parameters"
    return value + step - 1, f"models named up to {written}: fewer than {value + step:,} parameters"


def read_parameter_limit(text: str | None) -> tuple[int | None, str | None, str | None]:
    """`parameter_limit` for a form field: (limit, its meaning in words, what could not be read), never raising."""
    try:
        limit, meaning = parameter_limit(text) or (None, None)
    except ValueError as error:
        return None, None, f"max parameters: {error}"
    return limit, meaning, None


def score(value: float | None, digits: int = 2) -> str:
    """A score with `digits` decimals, never '-0.0' (a rounding of a tiny negative, or IEEE's negative zero)."""
    if value is None or math.isnan(value):
        return "—"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def gib(count: int | None) -> str:
    """Bytes -> '15.0 GiB' (binary, as the architecture notes fix: GiB = 2^30)."""
    return "—" if count is None else f"{count / GIB:,.1f} GiB"


def tokens(count: int | None) -> str:
    return "—" if count is None else f"{count:,}"


def moment(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "—"


def percent(fraction: float | None) -> str:
    """A runner's progress (0-1, as heartbeats report it) -> '42 %'."""
    return "—" if fraction is None else f"{fraction * 100:.0f} %"


def architecture_words(model: "ModelRead") -> str | None:
    """The shape in a line: layers and heads, the experts and image encoder a design adds, how it is stored."""
    if model.num_layers is None or model.hidden_size is None:
        return None
    words = [f"{model.num_layers} layers of {model.hidden_size:,}"]
    if model.num_attention_heads and model.num_kv_heads:
        words.append(f"{model.num_attention_heads} heads ({model.num_kv_heads} for keys and values)")
    components = model.components
    if components is not None and components["design"] == "mllama":
        words.append(f"{components['cross_attention_layers']} of the layers cross-attention to images")
    if model.moe_experts_total and components is not None and components["design"] == "llama4":
        step = components["moe_layer_step"]
        where = {0: "no layer", 1: "every layer", 2: "every second layer"}.get(step, f"every {step}th layer")
        words.append(f"{model.moe_experts_total} experts in {where}, {model.moe_experts_active or 1} active per token")
    vision = components.get("vision") if components is not None and components["design"] != "llama" else None
    if vision is not None:
        words.append(f"an image encoder of {vision['num_layers']} layers of {vision['hidden_size']:,}")
    quantization = components.get("quantization") if components is not None else None
    if quantization is not None:
        kept = len(quantization["kept_layers"])
        part = "MLP" if quantization["weights"] == "mlp" else "routed experts"
        words.append(f"stored with its {part} in {quantization['precision']} ({kept} layers kept in bf16)")
    return "; ".join(words)
