"""What made a result: read from the stored lm-eval document (and the runner's own record beside it)."""

import gzip
import json
import re
import uuid
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from corral.documents import AcceleratorRecord, JsonObject
from corral.errors import NotFound
from corral.evaluations.repository import load_evaluation
from corral.results.ingest import json_object
from corral.results.repository import result_of_shard, results_of
from corral.scores.schemas import JobProvenance, Provenance, Seeds

# torch.utils.collect_env's report, as lm-eval stores it in `pretty_env_info`: "Name: value" lines, where the
# GPU line may continue with one "GPU n: ..." line per device.
_ENV_LINE = re.compile(r"^(?P<name>[^:\n]+):\s*(?P<value>.*)$", re.MULTILINE)


def _env(report: Any) -> dict[str, str]:
    if not isinstance(report, str):
        return {}
    facts = {match["name"].strip(): match["value"].strip() for match in _ENV_LINE.finditer(report)}
    lines = report.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("GPU models and configuration:"):
            devices = [line.split(":", 1)[1].strip()]
            devices += [extra.strip() for extra in lines[index + 1 :] if extra.startswith("GPU ")]
            facts["GPU models and configuration"] = "; ".join(device for device in devices if device)
    return facts


def _text(value: Any, limit: int = 200) -> str | None:
    if value is None or value == "" or isinstance(value, dict | list):
        return None
    return str(value)[:limit]


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def job_provenance(document: JsonObject, **identity: Any) -> JobProvenance:
    """The reproducibility record of one job's results; `identity` fills the fields Corral knows itself."""
    config = json_object(document.get("config"))
    runner = json_object(document.get("corral_runner"))
    env = _env(document.get("pretty_env_info"))
    n_shot = {name: value for name, value in json_object(document.get("n-shot")).items() if _integer(value) is not None}
    return JobProvenance(
        **identity,
        lm_eval_version=_text(document.get("lm_eval_version")),
        lm_eval_commit=_text(document.get("git_hash")),
        task_versions={name: str(value) for name, value in json_object(document.get("versions")).items()},
        task_hashes={name: str(value) for name, value in json_object(document.get("task_hashes")).items()},
        n_shot=n_shot,
        seeds=Seeds(
            random=_integer(config.get("random_seed")),
            numpy=_integer(config.get("numpy_seed")),
            torch=_integer(config.get("torch_seed")),
            fewshot=_integer(config.get("fewshot_seed")),
        ),
        model_args=_text(config.get("model_args"), 2000),
        model_sha=_text(config.get("model_sha")),
        model_revision=_text(config.get("model_revision")),
        dtype=_text(config.get("model_dtype")),
        batch_size=_text(config.get("batch_size")),
        limit=config.get("limit") if isinstance(config.get("limit"), int | float) else None,
        chat_template=_text(document.get("chat_template"), 100_000),
        chat_template_sha=_text(document.get("chat_template_sha")),
        system_instruction_sha=_text(document.get("system_instruction_sha")),
        fewshot_as_multiturn=document.get("fewshot_as_multiturn")
        if isinstance(document.get("fewshot_as_multiturn"), bool)
        else None,
        torch_version=_text(runner.get("torch_version")) or _text(env.get("PyTorch version")),
        transformers_version=_text(document.get("transformers_version")),
        cuda_version=_text(runner.get("cuda_version")) or _text(env.get("CUDA used to build PyTorch")),
        gpu=_text(runner.get("gpu"), 500) or _text(env.get("GPU models and configuration"), 500),
        gpu_count=_integer(runner.get("gpu_count")),
        driver_version=_text(runner.get("driver_version")) or _text(env.get("Nvidia driver version")),
        evaluated_at=_text(document.get("date")),
        evaluation_seconds=_text(document.get("total_evaluation_time_seconds")),
    )


def _accelerators(accelerators: list[AcceleratorRecord]) -> list[str]:
    return [
        f"{item.get('kind')} x {item.get('count', 1)} ({int(item.get('memory_bytes', 0)) / 1e9:.0f} GB)"
        for item in accelerators
    ]


async def evaluation_provenance(session: AsyncSession, evaluation_id: uuid.UUID) -> Provenance:
    evaluation = await load_evaluation(session, evaluation_id)
    config = evaluation.config
    base = f"/v1/evaluations/{evaluation.id}/jobs"
    jobs = [
        job_provenance(
            json.loads(gzip.decompress(result.results_gzip)),
            shard_index=job.shard_index,
            tasks=job.tasks,
            source="import" if result.attempt_id is None else "runner",
            runner=runner.name if runner is not None else None,
            runner_accelerators=_accelerators(runner.accelerators) if runner is not None else [],
            attempt_id=result.attempt_id,
            content_sha256=result.content_sha256,
            results_url=f"{base}/{job.shard_index}/results",
            samples_url=f"{base}/{job.shard_index}/samples" if result.samples_gzip is not None else None,
        )
        for result, job, runner in await results_of(session, evaluation.id)
    ]
    return Provenance(
        evaluation_id=evaluation.id,
        model=config["model"],
        revision=config["revision"],
        suite=config["suite"],
        suite_version=config["suite_version"],
        state=evaluation.state.value,
        config_hash=evaluation.config_hash,
        config=config,
        jobs=jobs,
    )


async def stored_document(
    session: AsyncSession, evaluation_id: uuid.UUID, shard_index: int, part: Literal["results", "samples"]
) -> bytes:
    """A job's results document (or samples) as stored: gzip-compressed JSON."""
    await load_evaluation(session, evaluation_id)  # 404 names the evaluation when it does not exist
    result = await result_of_shard(session, evaluation_id, shard_index)
    if result is None:
        raise NotFound(f"Evaluation {evaluation_id} has no results for shard {shard_index} (yet).")
    stored = result.results_gzip if part == "results" else result.samples_gzip
    if stored is None:
        raise NotFound(f"No samples were uploaded with shard {shard_index} of evaluation {evaluation_id}.")
    return stored
