"""Every field of an evaluation request that reaches a runner, with the values it may take, written out by hand from
the README's security section (the table there says the same, and tests/test_request_fields.py holds the two to
each other).

Nothing here is read from the schemas it checks: each row names values that must be taken and values that must be
refused, the hostile ones first among them (shell and Slurm syntax, option injection, path traversal, lm-eval's
own `key=value,` syntax), and the walk sends each one. A new field reaching the runner without a row fails the walk.
"""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunnerField:
    name: str
    allowed: str  # the README's words
    reaches: str  # where it ends up on the runner
    valid: tuple[Any, ...]
    refused: tuple[Any, ...]


HOSTILE_TEXT = (
    "x; rm -rf /",
    "$(id)",
    "`id`",
    "a\nb",
    "#SBATCH --uid=0",
    "--wrap=id",
    "../../etc/passwd",
    "a,trust_remote_code=True",
    "a=b",
)

FIELDS: tuple[RunnerField, ...] = (
    RunnerField(
        "model",
        "a Hub repo id `owner/name` (letters, digits, `_`, `-`, `.`; each part at most 96)",
        "lm-eval's model_args (`pretrained=`)",
        ("corral-test/tiny-llama",),
        (*HOSTILE_TEXT, "owner/name/../x", "/abs/path", "owner/na me"),
    ),
    RunnerField(
        "revision",
        "a full 40-character lowercase commit sha of a recorded revision",
        "lm-eval's model_args (`revision=`)",
        (),  # the recorded sha, filled in by the walk
        (*HOSTILE_TEXT, "main", "A" * 40, "0" * 39),
    ),
    RunnerField(
        "ref",
        "a Hub branch or tag (letters, digits, `_`, `.`, `/`, `-`), resolved to a sha by the server",
        "nothing: the resolved sha is sent",
        (),
        ("x; id", "$(id)", "a\nb", "a,b=c", "a b"),
    ),
    RunnerField(
        "alias",
        "a Corral alias (`[a-z][a-z0-9_-]{0,38}`), resolved to a sha by the server",
        "nothing: the resolved sha is sent",
        (),
        (*HOSTILE_TEXT, "Champion"),
    ),
    RunnerField(
        "suite",
        "the name of a suite the server keeps",
        "task names and the suite's task folder (under the runner's evals/tasks/)",
        ("smoke",),
        (*HOSTILE_TEXT, "../smoke"),
    ),
    RunnerField(
        "suite_version",
        "12 lowercase hex digits of a kept version",
        "nothing: the server picks the tasks",
        (),
        ("../x", "$(id)", "ABCDEF012345", "0123456789abc"),
    ),
    RunnerField(
        "precision",
        "one of fp32, bf16, fp16, fp8, int8, int4",
        "lm-eval's model_args (`dtype=`, `quantization=`)",
        ("fp32", "bf16"),
        ("float16,trust_remote_code=True", "auto", "BF16", 16),
    ),
    RunnerField(
        "backend",
        "hf or vllm",
        "which lm-eval model class loads the weights",
        ("hf",),
        ("hf,trust_remote_code=True", "openai-completions", "local-chat-completions", "HF"),
    ),
    RunnerField(
        "batch_size",
        "an integer 1-4096, `auto` or `auto:N` (N 1-999)",
        "lm-eval's batch_size",
        (1, "auto", "auto:4"),
        (0, 5000, "auto:0", "4; id", "$(id)", "auto,trust_remote_code=True", True),
    ),
    RunnerField(
        "apply_chat_template",
        "true or false",
        "lm-eval's apply_chat_template",
        (True, False),
        ("true", 1, "{{ config }}"),
    ),
    RunnerField(
        "fewshot_as_multiturn",
        "true or false (true needs apply_chat_template)",
        "lm-eval's fewshot_as_multiturn",
        (False,),
        ("false", 0),
    ),
    RunnerField(
        "num_fewshot",
        "an integer 0-64",
        "lm-eval's num_fewshot",
        (0, 5),
        (-1, 65, "5", 2.5),
    ),
    RunnerField(
        "limit",
        "an integer 1-10,000,000, or a fraction strictly between 0 and 1",
        "lm-eval's limit",
        (4, 0.5),
        (0, 1.5, -3, "4", 10**8),
    ),
    RunnerField(
        "seed",
        "an integer 0-2,147,483,647",
        "lm-eval's seeds",
        (0, 1234),
        (-1, 2**31, "1", 1.5),
    ),
    RunnerField(
        "harness_version",
        "1-32 characters of letters, digits, `.`, `+`, `-`",
        "compared with the runner's lm-eval version; never installed",
        ("0.4.13",),
        (*HOSTILE_TEXT, "0.4.13 @ git+https://evil/x"),
    ),
)

# gen_kwargs: the allow-list, key by key (lm-eval passes them to transformers' generate() or vLLM's SamplingParams).
GENERATION: dict[str, tuple[str, tuple[Any, ...], tuple[Any, ...]]] = {
    "do_sample": ("true or false", (True,), ("yes", 1)),
    "temperature": ("a number 0-10", (0, 0.7), (-0.1, 10.5, "0.7", True)),
    "top_p": ("a number above 0, at most 1", (0.9, 1), (0, 1.5, "0.9")),
    "top_k": ("an integer 1-100,000", (1, 50), (0, 100_001, 2.5, "50")),
    "min_p": ("a number 0-1", (0, 0.05), (-0.1, 1.1)),
    "repetition_penalty": ("a number above 0, at most 10", (1.1,), (0, 11, "1.1")),
    "max_gen_toks": ("an integer 1-131,072", (1, 256), (0, 131_073, 256.5)),
    "until": (
        "a stop sequence or a list of 1-16 (each 1-100 characters)",
        ("\n\n", ["Q:", "</s>"]),
        ([], [""], ["x" * 101], ["a"] * 17, [1]),
    ),
    "num_beams": ("an integer 1-16 (hf only)", (1, 4), (0, 17, "4")),
}

# Keys that name or load code: each refused by name (and any other key not in GENERATION).
CODE_KEYS = (
    "custom_generate",
    "trust_remote_code",
    "assistant_model",
    "assistant_tokenizer",
    "logits_processor",
    "stopping_criteria",
    "prefix_allowed_tokens_fn",
    "streamer",
    "generation_config",
    "penalty_alpha",
    "num_beam_groups",
    "diversity_penalty",
    "dola_layers",
    "constraints",
    "force_words_ids",
    "cache_implementation",
)
UNKNOWN_KEYS = ("max_new_tokens", "model", "pretrained", "seed", "__class__", "Temperature", "")
