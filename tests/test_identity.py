"""An evaluation's identity (app/evaluations/identity.py): the canonical form its hash is taken over.

Stored evaluations keep their hash, so the canonical form must never drift: sorted keys, no spaces, ASCII escapes.
The API-level rules (same request, same evaluation; a changed setting, a new one) are in test_evaluations.py.
"""

import hashlib
import json

from corral.evaluations.identity import EvaluationConfig, config_hash

CONFIG = EvaluationConfig(
    model="meta-llama/Llama-3.1-8B-Instruct",
    revision="0e9e39f249a16976918f6564b8830bc894c89659",
    suite="openllm-v2",
    suite_version="0123456789ab",
    harness_version="0.4.9",
    backend="hf",
    precision="bf16",
    apply_chat_template=True,
    fewshot_as_multiturn=True,
    num_fewshot=None,
    limit=0.5,
    seed=1234,
    gen_kwargs={"until": "é", "temperature": 0},
)

# Written out by hand: keys sorted (nested ones too), "," and ":" with no spaces, non-ASCII as \\u escapes.
CANONICAL = (
    '{"apply_chat_template":true,"backend":"hf","fewshot_as_multiturn":true,'
    '"gen_kwargs":{"temperature":0,"until":"\\u00e9"},"harness_version":"0.4.9","limit":0.5,'
    '"model":"meta-llama/Llama-3.1-8B-Instruct","num_fewshot":null,"precision":"bf16",'
    '"revision":"0e9e39f249a16976918f6564b8830bc894c89659","seed":1234,"suite":"openllm-v2",'
    '"suite_version":"0123456789ab"}'
)


def test_the_hash_is_sha256_of_the_canonical_json() -> None:
    assert config_hash(CONFIG) == hashlib.sha256(CANONICAL.encode()).hexdigest()
    assert json.loads(CANONICAL) == CONFIG


def test_code_trust_is_written_only_when_given_so_older_identities_stay() -> None:
    """`trust_remote_code` came later: a config without it hashes as before (CANONICAL has no such key), and one
    with it is another evaluation."""
    assert "trust_remote_code" not in CANONICAL
    trusted = EvaluationConfig(**CONFIG, trust_remote_code=True)
    assert config_hash(trusted) != config_hash(CONFIG)
    assert json.dumps(trusted, sort_keys=True, separators=(",", ":")).endswith('"trust_remote_code":true}')


def test_key_order_never_splits_an_identity() -> None:
    reordered = EvaluationConfig(**dict(reversed(list(CONFIG.items()))))  # type: ignore[typeddict-item]
    assert list(reordered) != list(CONFIG)
    assert config_hash(reordered) == config_hash(CONFIG)


def test_every_setting_changes_the_identity() -> None:
    changed = {
        "model": "meta-llama/Llama-3.1-70B-Instruct",
        "revision": "1" * 40,
        "suite": "core",
        "suite_version": "ba9876543210",
        "harness_version": "0.4.10",
        "backend": "vllm",
        "precision": "fp16",
        "apply_chat_template": False,
        "fewshot_as_multiturn": False,
        "num_fewshot": 0,
        "limit": None,
        "seed": 1235,
        "gen_kwargs": None,
        "trust_remote_code": True,
    }
    assert set(changed) == set(EvaluationConfig.__annotations__)
    digests = {config_hash(EvaluationConfig(**(CONFIG | {key: value}))) for key, value in changed.items()}  # type: ignore[typeddict-item]
    assert len(digests | {config_hash(CONFIG)}) == len(changed) + 1
