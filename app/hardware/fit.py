"""Does it fit: the one rule behind every such answer — model search, `/v1/requirements`, a model's requirements
and page, the leaderboard's `fits_on`, the queue's matching and the runner's placement.

A need is two figures: the whole (weights + the KV cache for the context, +20 %) and the largest piece one device
must hold (a decoder layer with its share of the KV cache, or the embedding matrix, +20 %). Devices hold a need
when together they hold the whole and each holds the largest piece, counting only the devices the backend can
spread a model over: any number of one machine's GPUs for `hf` (accelerate places whole layers on each), a power
of two of them per node for `vllm` (tensor parallelism splits attention heads), times the nodes (pipeline
parallel), which only vLLM spans. The context is what was asked, capped at the model's own context length: a
model never holds more tokens than it was built for.

Each figure is integer arithmetic, so the same functions answer in Python and build the SQL of the model search.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, and_, case, func, literal, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from corral.hardware import estimator
from corral.hardware.estimator import Architecture
from corral.tables.types import floordiv, wide_integer

GIB = 2**30
DEFAULT_CONTEXT_TOKENS = 4096  # where a question names no context and the model states none
SPREADS_OVER_NODES = frozenset({"vllm"})  # Ray pipeline parallel; accelerate stays on one machine
POWER_OF_TWO_BACKENDS = frozenset({"vllm"})
UNKNOWN_PARAMETERS = "Parameter count unknown: any runner may take it (sync it from the Hub)."
UNKNOWN_ARCHITECTURE = "Architecture unknown: weights only, on a single device."
UNQUANTIZED_BITS = estimator.PRECISION_BITS[estimator.UNQUANTIZED_PRECISION]


@dataclass(frozen=True)
class MemoryNeed:
    """What running a model takes: all devices together, and the most one device must hold."""

    total_bytes: int
    device_bytes: int
    context_tokens: int | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Devices:
    """Accelerators offered to one model: `per_node` devices of the largest kind (`device_bytes` each) on each of
    `nodes` nodes, and any smaller devices beside them on one machine (`others`, bytes each)."""

    device_bytes: int
    per_node: int = 1
    nodes: int = 1
    others: tuple[int, ...] = ()

    @classmethod
    def of_groups(cls, groups: Sequence[tuple[int, int]]) -> "Devices":
        """One machine's devices, as pairs of (bytes per device, count)."""
        groups = [(memory, count) for memory, count in groups if memory > 0 and count > 0]
        if not groups:
            return cls(0, 0)
        largest = max(memory for memory, _ in groups)
        others = sorted((memory for memory, count in groups if memory != largest for _ in range(count)), reverse=True)
        return cls(largest, sum(count for memory, count in groups if memory == largest), 1, tuple(others))


@dataclass(frozen=True)
class Placement:
    """How a model is spread: over `tensor_parallel` devices of a node (on `hf`, the GPUs accelerate places
    layers on), times `pipeline_parallel` nodes."""

    tensor_parallel: int
    pipeline_parallel: int = 1

    @property
    def devices(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel


@dataclass(frozen=True)
class StoredRelease:
    """A release's weights as stored: at its own precision they take `weight_bytes` (a quantized release keeps some
    layers in 16 bits and adds scales), not parameters x bits. Quantizers convert linear layers only, so the
    embeddings of a release stored below 16 bits are still 16-bit."""

    precision: str
    weight_bytes: int


def stored_release(default_dtype: str | None, stored_weight_bytes: int | None) -> StoredRelease | None:
    """What a record says of its stored weights (None where it records no stored size)."""
    if stored_weight_bytes is None:
        return None
    return StoredRelease(estimator.stored_precision(default_dtype), stored_weight_bytes)


def context_for(asked: int, model_context: int | None) -> int:
    """The tokens the KV cache is sized for: what was asked, at most the model's own context length."""
    return min(asked, model_context) if model_context else asked


def inference_need(
    arch: Architecture | None,
    parameters: int | None,
    *,
    precision: str,
    context_tokens: int,
    batch: int = 1,
    kv_precision: str | None = None,
    stored: StoredRelease | None = None,
) -> MemoryNeed:
    """The need of a model at a precision and context (already capped, see `context_for`); at the precision the
    release is stored in, its weights are what is stored."""
    if parameters is None:
        return MemoryNeed(0, 0, context_tokens, (UNKNOWN_PARAMETERS,))
    weights, embedding_precision = weights_at(parameters, precision, stored)
    if arch is None:
        total = estimator.with_overhead(weights)
        return MemoryNeed(total, total, context_tokens, (UNKNOWN_ARCHITECTURE,))
    kv = kv_bytes(arch, precision=precision, context_tokens=context_tokens, batch=batch, kv_precision=kv_precision)
    total = estimator.with_overhead(weights + kv)
    device = estimator.largest_piece_bytes(arch, weights, kv, embedding_precision)
    return MemoryNeed(total, min(device, total), context_tokens)


def weights_at(parameters: int, precision: str, stored: StoredRelease | None) -> tuple[int, str]:
    """The weights' bytes at a precision, and the precision their embedding matrix is held in."""
    if stored is None or stored.precision != precision:
        return int(estimator.weight_bytes(parameters, precision)), precision
    below_16_bits = estimator.PRECISION_BITS[precision] < UNQUANTIZED_BITS
    return stored.weight_bytes, estimator.UNQUANTIZED_PRECISION if below_16_bits else precision


def kv_bytes(
    arch: Architecture, *, precision: str, context_tokens: int, batch: int = 1, kv_precision: str | None = None
) -> int:
    kv_precision = kv_precision or estimator.default_kv_precision(precision)
    return int(
        estimator.kv_cache_bytes(
            arch.num_layers, arch.num_kv_heads, arch.resolved_head_dim, context_tokens, batch, kv_precision
        )
    )


def spread_width(per_node: int, backend: str) -> int:
    """How many of a node's largest devices a backend spreads one model over: all on hf, a power of two on vllm."""
    if backend in POWER_OF_TWO_BACKENDS:
        return 1 << (per_node.bit_length() - 1) if per_node > 0 else 0  # 4 of 6, 2 of 3
    return per_node


def usable_bytes(devices: Devices, backend: str) -> int:
    """The memory a backend can put one model in."""
    if backend in SPREADS_OVER_NODES:
        return devices.device_bytes * spread_width(devices.per_node, backend) * devices.nodes
    return devices.device_bytes * devices.per_node + sum(devices.others)


def shortfalls(need: MemoryNeed, devices: Devices, backend: str = "hf") -> list[str]:
    """Why these devices cannot hold the need; empty when they can."""
    reasons = []
    usable = usable_bytes(devices, backend)
    if need.total_bytes > usable:
        reasons.append(f"needs {gib(need.total_bytes)} of accelerator memory, has {gib(usable)}")
    if need.device_bytes > devices.device_bytes:
        reasons.append(f"needs {gib(need.device_bytes)} on one device, its largest has {gib(devices.device_bytes)}")
    return reasons


def holds(need: MemoryNeed, devices: Devices, backend: str = "hf") -> bool:
    return not shortfalls(need, devices, backend)


def placement(need: MemoryNeed, devices: Devices, backend: str = "hf") -> Placement | None:
    """The fewest devices that hold the need (None when these cannot): one when one holds it; else more of a
    node's devices (a power of two on vllm, the largest first on hf); more nodes only when a node is too small."""
    if not holds(need, devices, backend):
        return None
    if backend in SPREADS_OVER_NODES:
        width = spread_width(devices.per_node, backend)
        for pipeline in range(1, devices.nodes + 1):
            tensor = 1
            while tensor < width and tensor * pipeline * devices.device_bytes < need.total_bytes:
                tensor *= 2
            if tensor * pipeline * devices.device_bytes >= need.total_bytes:
                return Placement(tensor, pipeline)
    sizes = [devices.device_bytes] * devices.per_node + list(devices.others)
    held = 0
    for count, size in enumerate(sizes, start=1):
        held += size
        if held >= need.total_bytes:
            return Placement(count)
    return Placement(len(sizes))  # unreachable: `holds` said the usable memory suffices


NODE_DEVICES = 8  # the common GPU node, for "how many nodes" answers that name no node shape


def nodes_needed(need: MemoryNeed, device_bytes: int, per_node: int = NODE_DEVICES) -> int | None:
    """How many nodes of `per_node` such devices hold the need with vLLM (pipeline parallel across them)."""
    if need.device_bytes > device_bytes:
        return None
    return max(1, -(-need.total_bytes // (device_bytes * spread_width(per_node, "vllm"))))


def devices_needed(need: MemoryNeed, device_bytes: int) -> int | None:
    """How many devices of one kind on one machine hold the need (hf); None when one device cannot take its
    largest piece, so that no number of them can."""
    if need.device_bytes > device_bytes:
        return None
    return max(1, estimator.accelerators_needed(need.total_bytes, device_bytes))


def shapes_of(groups: Sequence[tuple[int, int, int]], max_nodes_per_job: int = 1) -> tuple[Devices, ...]:
    """What a runner offers one job, from its groups of (bytes per device, devices per node, nodes): one machine's
    devices together, or, for a cluster (a group of several nodes), each node shape on its own — a job runs on
    nodes of one shape, at most `max_nodes_per_job` of them. A cluster is never summed into one machine."""
    if all(nodes <= 1 for _, _, nodes in groups):
        return (Devices.of_groups([(memory, count) for memory, count, _ in groups]),)
    return tuple(
        Devices(memory, count, max(1, min(nodes, max_nodes_per_job)))
        for memory, count, nodes in groups
        if memory > 0 and count > 0
    ) or (Devices(0, 0),)


def best_shape(shapes: Sequence[Devices], need: MemoryNeed, backend: str) -> tuple[Devices, Placement | None]:
    """The shape that holds the need on the fewest devices (and that placement), else the largest shape."""
    placed = [(shape, placement(need, shape, backend)) for shape in shapes]
    held = [(shape, where) for shape, where in placed if where is not None]
    if held:
        return min(held, key=lambda pair: pair[1].devices if pair[1] is not None else 0)
    return max(shapes, key=lambda shape: usable_bytes(shape, backend)), None


def gib(count: int) -> str:
    return f"{count / GIB:,.1f} GiB"


class greatest(FunctionElement[int]):
    """The larger of two integer expressions: GREATEST on PostgreSQL, the two-argument max() on SQLite."""

    inherit_cache = True
    name = "greatest"


@compiles(greatest, "postgresql")
def _greatest_postgresql(element: greatest, compiler: SQLCompiler, **kw: Any) -> str:
    return f"GREATEST({compiler.process(element.clauses, **kw)})"


@compiles(greatest, "sqlite")
def _greatest_sqlite(element: greatest, compiler: SQLCompiler, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


@dataclass(frozen=True)
class ArchitectureColumns:
    """The model columns the rule reads, as SQL expressions (a NULL figure is an unknown one)."""

    parameters: Any
    hidden_size: Any
    num_layers: Any
    num_kv_heads: Any
    head_dim: Any
    vocab_size: Any
    tied_embeddings: Any
    context_length: Any
    default_dtype: Any
    stored_weight_bytes: Any


def as_stored_clause(columns: ArchitectureColumns, precision: str) -> ColumnElement[bool]:
    """`stored_release(...)` applies at `precision`: a stored size recorded, and the row stored at that precision."""
    dtypes = estimator.dtypes_stored_as(precision)
    stored_so = columns.default_dtype.in_(dtypes)
    if precision == estimator.DEFAULT_STORED_PRECISION:
        stored_so = or_(stored_so, columns.default_dtype.is_(None))
    return and_(columns.stored_weight_bytes.isnot(None), stored_so)


def need_columns(columns: ArchitectureColumns, *, precision: str, context_tokens: int) -> tuple[Any, Any]:
    """`inference_need` over columns: (the whole, the largest piece) as SQL expressions, with the same integer
    steps; the piece is NULL where the architecture is unknown (then the whole must fit one device, as in Python).
    Weights are the stored size where the row is stored at `precision` (`weights_at`).
    `wide` integers from the first factor on: layers x heads x head dim x tokens can pass BIGINT's range for the
    sizes the schema admits, and PostgreSQL would raise instead of answering."""
    tokens = case(
        (columns.context_length < context_tokens, columns.context_length),
        else_=context_tokens,
    )
    bits = estimator.PRECISION_BITS[precision]
    kv_bits = estimator.PRECISION_BITS[estimator.default_kv_precision(precision)]

    def with_overhead(value: Any) -> Any:  # estimator.with_overhead, floored as Python floors it
        return value + floordiv(value * estimator.INFERENCE_OVERHEAD_PERCENT, 100)

    as_stored = as_stored_clause(columns, precision)
    weights = case(
        (as_stored, wide_integer(columns.stored_weight_bytes)),
        else_=floordiv(wide_integer(columns.parameters) * bits, 8),
    )
    embedding_bits = case((as_stored, UNQUANTIZED_BITS), else_=bits) if bits < UNQUANTIZED_BITS else bits
    kv = floordiv(2 * wide_integer(columns.num_layers) * columns.num_kv_heads * columns.head_dim * tokens * kv_bits, 8)
    total = with_overhead(weights + func.coalesce(kv, 0))
    embedding = floordiv(func.coalesce(columns.vocab_size, 0) * wide_integer(columns.hidden_size) * embedding_bits, 8)
    embeddings_total = case((columns.tied_embeddings.is_(True), embedding), else_=2 * embedding)
    layer = floordiv(greatest(0, weights - embeddings_total), columns.num_layers)
    piece = with_overhead(greatest(embedding, layer + floordiv(kv, columns.num_layers)))
    return total, piece


def holds_clause(
    columns: ArchitectureColumns, devices: Devices, *, precision: str, context_tokens: int, backend: str = "hf"
) -> ColumnElement[bool]:
    """`holds` over columns: the whole within the usable memory, and the piece (never more than the whole, as
    `inference_need` has it) within one device. A model lacking its parameter count never matches."""
    total, piece = need_columns(columns, precision=precision, context_tokens=context_tokens)
    usable, device = literal(usable_bytes(devices, backend), BigInteger()), literal(devices.device_bytes, BigInteger())
    return and_(columns.parameters.isnot(None), total <= usable, or_(total <= device, piece <= device))
