"""Real safetensors checkpoints of Llama architecture, generated at test time (zeros: only headers matter here).

The file format is written to the letter: an 8-byte little-endian header length, a JSON header of
name -> {dtype, shape, data_offsets}, then the tensor bytes.
"""

import json
import math
import struct
from dataclasses import dataclass

DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1}
Tensor = tuple[str, tuple[int, ...]] | tuple[str, tuple[int, ...], str]  # name, shape[, dtype]


@dataclass(frozen=True)
class TinyLlama:
    hidden_size: int = 64
    num_layers: int = 2
    num_attention_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int = 256
    max_position_embeddings: int = 2048
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        d, hd = self.hidden_size, self.head_dim
        shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (self.vocab_size, d))]
        for layer in range(self.num_layers):
            prefix = f"model.layers.{layer}"
            shapes += [
                (f"{prefix}.self_attn.q_proj.weight", (self.num_attention_heads * hd, d)),
                (f"{prefix}.self_attn.k_proj.weight", (self.num_kv_heads * hd, d)),
                (f"{prefix}.self_attn.v_proj.weight", (self.num_kv_heads * hd, d)),
                (f"{prefix}.self_attn.o_proj.weight", (d, self.num_attention_heads * hd)),
                (f"{prefix}.mlp.gate_proj.weight", (self.intermediate_size, d)),
                (f"{prefix}.mlp.up_proj.weight", (self.intermediate_size, d)),
                (f"{prefix}.mlp.down_proj.weight", (d, self.intermediate_size)),
                (f"{prefix}.input_layernorm.weight", (d,)),
                (f"{prefix}.post_attention_layernorm.weight", (d,)),
            ]
        shapes.append(("model.norm.weight", (d,)))
        if not self.tied_embeddings:
            shapes.append(("lm_head.weight", (self.vocab_size, d)))
        return shapes

    @property
    def parameter_count(self) -> int:
        return sum(math.prod(shape) for _, shape in self.tensors())

    def config(self) -> dict[str, object]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_kv_heads,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tied_embeddings,
            "torch_dtype": "bfloat16",
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
        }


def safetensors_file(tensors: list[Tensor], dtype: str = "BF16") -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, *own in tensors:
        kind = own[0] if own else dtype
        size = math.prod(shape) * DTYPE_BYTES[kind]
        header[name] = {"dtype": kind, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the spec pads the header to 8 bytes with spaces
    return struct.pack("<Q", len(encoded)) + encoded + bytes(offset)


def checkpoint_files(arch: TinyLlama, shards: int = 1) -> dict[str, bytes]:
    """config.json plus model.safetensors, or N shards and their index, as a Hub repo would hold them."""
    files: dict[str, bytes] = {"config.json": json.dumps(arch.config(), indent=2).encode()}
    tensors = arch.tensors()
    if shards == 1:
        files["model.safetensors"] = safetensors_file(tensors)
        return files
    per_shard = math.ceil(len(tensors) / shards)
    weight_map: dict[str, str] = {}
    total = 0
    for index in range(shards):
        name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        part = tensors[index * per_shard : (index + 1) * per_shard]
        files[name] = safetensors_file(part)
        total += sum(math.prod(shape) * 2 for _, shape in part)
        weight_map |= {tensor: name for tensor, _ in part}
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2
    ).encode()
    return files


def fp8_checkpoint_files(arch: TinyLlama, kept_layers: tuple[int, ...]) -> dict[str, bytes]:
    """A checkpoint quantized as Meta's FP8 releases are (fbgemm_fp8): each MLP weight of the layers not kept in
    bf16 stored in fp8 with one fp32 scale per output row; everything else bf16."""
    tensors: list[Tensor] = []
    for name, shape in arch.tensors():
        layer = name.split(".")[2] if name.startswith("model.layers.") else None
        if ".mlp." in name and layer is not None and int(layer) not in kept_layers:
            tensors += [(name, shape, "F8_E4M3"), (name.replace(".weight", ".weight_scale"), (shape[0], 1), "F32")]
        else:
            tensors.append((name, shape, "BF16"))
    config = arch.config() | {
        "quantization_config": {
            "quant_method": "fbgemm_fp8",
            "activation_scale_ub": 1200.0,
            "modules_to_not_convert": [f"model.layers.{layer}" for layer in kept_layers] + ["lm_head"],
        }
    }
    return {"config.json": json.dumps(config, indent=2).encode(), "model.safetensors": safetensors_file(tensors)}
