"""Benchmark: sync 200 models from a fake Hub that adds 50 ms to every request.

    .venv/bin/python -m tests.bench.bench_hub_sync [--models 200] [--latency 0.05] [--concurrency 8]

Reports wall time, requests and bytes per model, and the wall time of a baseline measured in the same run:
one bare `HfApi.model_info` per repo at the same concurrency (the least any sync must ask). Half the repos
hold a single safetensors file, half three shards; half are tiny, half ~34 MB, to show that what a sync
reads does not grow with the weights.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from huggingface_hub import HfApi

from corral import migrate
from corral.catalog.loader import load_catalog
from corral.db import create_engine, create_sessionmaker, in_unit_of_work
from corral.hub.client import HubClient
from corral.hub.service import HubSyncService, fetch_in_thread
from tests.support.checkpoints import TinyLlama, checkpoint_files
from tests.support.databases import make_settings
from tests.support.fake_hub import FakeHub, llama_repo

SMALL = TinyLlama()
LARGE = TinyLlama(
    hidden_size=256, num_layers=4, num_attention_heads=8, num_kv_heads=2, intermediate_size=1024, vocab_size=32000
)


async def sync_all(settings, repo_ids: list[str], concurrency: int) -> None:  # type: ignore[no-untyped-def]
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    client = HubClient(settings)
    gate = asyncio.Semaphore(concurrency)

    async def one(repo_id: str) -> None:
        async with gate:
            fetch = await fetch_in_thread(client, repo_id, "main")
            async with sessionmaker() as session:
                await HubSyncService(session, settings).register(repo_id, fetch, revision="main", extra={})
                await session.commit()

    try:
        await asyncio.gather(*(one(repo_id) for repo_id in repo_ids))
    finally:
        await engine.dispose()


async def baseline(endpoint: str, repo_ids: list[str], concurrency: int) -> None:
    api = HfApi(endpoint=endpoint, token=False)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        await asyncio.gather(
            *(loop.run_in_executor(pool, partial(api.model_info, repo_id, files_metadata=True)) for repo_id in repo_ids)
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    variants = {
        (size, shards): checkpoint_files(arch, shards=shards)
        for size, arch in (("small", SMALL), ("large", LARGE))
        for shards in (1, 3)
    }
    weight_bytes = {
        key: sum(len(v) for k, v in files.items() if k.endswith(".safetensors")) for key, files in variants.items()
    }
    hub = FakeHub()
    repo_ids = []
    keys = list(variants)
    for index in range(args.models):
        key = keys[index % len(keys)]
        repo_id = f"bench/model-{index:04d}"
        hub.add(llama_repo(repo_id, variants[key]))
        repo_ids.append(repo_id)

    with tempfile.TemporaryDirectory() as directory, hub.running():
        hub.latency = args.latency
        settings = make_settings(
            f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}",
            hub_endpoint=hub.url,
            hub_retries=0,
            hub_sync_concurrency=args.concurrency,
        )
        migrate.upgrade(settings)
        asyncio.run(in_unit_of_work(settings, load_catalog))

        started = time.perf_counter()
        asyncio.run(baseline(hub.url, repo_ids, args.concurrency))
        baseline_seconds = time.perf_counter() - started
        hub.log.clear()

        started = time.perf_counter()
        asyncio.run(sync_all(settings, repo_ids, args.concurrency))
        sync_seconds = time.perf_counter() - started

    per_repo_requests = dict.fromkeys(repo_ids, 0)
    per_repo_bytes = dict.fromkeys(repo_ids, 0)
    for entry in hub.log:
        if entry.repo_id in per_repo_requests:
            per_repo_requests[entry.repo_id] += 1
            per_repo_bytes[entry.repo_id] += entry.bytes_sent
    print(f"models: {args.models}, latency per request: {args.latency * 1000:.0f} ms, concurrency: {args.concurrency}")
    for (size, shards), weights in weight_bytes.items():
        sample = [repo_ids[i] for i in range(len(repo_ids)) if keys[i % len(keys)] == (size, shards)]
        print(
            f"  {size:5} x{shards} shard(s): weights {weights / 1e6:7.2f} MB; per sync "
            f"{statistics.mean(per_repo_requests[r] for r in sample):.0f} requests (budget {4 + shards}), "
            f"{statistics.mean(per_repo_bytes[r] for r in sample) / 1e3:.1f} kB read"
        )
    print(f"sync wall time: {sync_seconds:.2f} s ({sync_seconds / args.models * 1000:.1f} ms/model)")
    print(f"baseline (one model_info per repo, same concurrency): {baseline_seconds:.2f} s")
    print(f"ratio sync / baseline: {sync_seconds / baseline_seconds:.2f}")
    print(
        f"max bytes for one model: {max(per_repo_bytes.values()) / 1e3:.1f} kB; "
        f"max requests: {max(per_repo_requests.values())}"
    )


if __name__ == "__main__":
    main()
