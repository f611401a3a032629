"""A tiny Llama-architecture checkpoint made on the spot: random weights, a tokenizer trained on the smoke data.

Real enough for lm-eval's `hf` backend to load and run end to end on a CPU in seconds (its answers are noise):
the tests use it, and so does `corral-runner demo`, the one-machine tour.
"""

import json
from pathlib import Path


def build_tiny_llama(directory: Path, *, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    corpus: list[str] = []
    tasks = Path(__file__).resolve().parent / "tasks" / "smoke"
    for data in tasks.glob("*.jsonl"):
        for line in data.read_text().splitlines():
            corpus.extend(str(value) for value in json.loads(line).values())
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator(
        [*corpus, "Question: Answer: Q: A:\n 0 1 2 3 4 5 6 7 8 9"],
        trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False),
    )
    from tokenizers import decoders

    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.save_pretrained(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    return directory
