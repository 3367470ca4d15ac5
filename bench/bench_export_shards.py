"""Benchmark the distributed export's shard worker: images/s per worker and its cost per image.

Prints one JSON object:

- ``plan_step``: the plan step's own work for ``--images`` images (planning the manifest, writing
  the shard files) against the keep-alive stub: CPU ms per image, shard files written;
- ``keepalive_stub``: ONE shard worker (`adapters.export_shards.run_shard`, ``--threads`` copy
  threads) writing a ``--shard-size`` shard to an S3-shaped endpoint that keeps connections open
  like S3 and answers at once (a child process; it stores what is PUT so the worker can read its
  shard file back): images/s per worker, the worker's CPU ms per image, requests per image by
  operation. This is the worker's ceiling: on AWS, S3's latency is hidden by the copy threads
  until the CPU (or S3's 3,500 PUT/COPY per second per prefix) is the bound;
- ``moto_server``: the same worker against moto's server (a child process on 127.0.0.1, real
  copies of real objects, one connection per request): images/s per worker there;
- ``per_image_cost``: the numbers the README's scale table is computed from.

Run: ``PYTHONPATH=.:lambdas .venv/bin/python bench/bench_export_shards.py --images 20000 --shard-size 2000``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_export import LABELS, _free_port, _serve, _serve_keepalive_stub, start_endpoint, workflow_lines

from labelloop_core.contract import OUTPUT_MANIFEST
from labelloop_core.export import ExportPlanner

BUCKET = "bench-data"
TINY_IMAGE = b"\x89PNG\r\n\x1a\n" + b"\x00" * 59  # 67 bytes: the copy's cost is per request, not per byte


def _serve_storing_stub(port: int) -> None:
    """Child process: the keep-alive stub of ``bench_export``, keeping what a worker reads back (``/plan/``)."""
    _serve_keepalive_stub(port, keep="/plan/")


def _plan(images: int) -> Any:
    planner = ExportPlanner(LABELS, val_fraction=0.2, allowed_buckets={BUCKET})
    planner.add_manifest(
        f"s3://{BUCKET}/work/batches/bench/b1/{OUTPUT_MANIFEST}", workflow_lines(images, bucket=BUCKET)
    )
    return planner.plan()


def _counting_client(threads: int) -> tuple[Any, Counter[str]]:
    from adapters.export_writer import s3_client

    s3 = s3_client(threads)
    requests: Counter[str] = Counter()
    lock = threading.Lock()

    def count(model: Any, **_: Any) -> None:
        with lock:
            requests[model.name] += 1

    s3.meta.events.register("before-call.s3", count)
    for _attempt in range(100):  # the child process needs a moment to listen
        try:
            s3.create_bucket(Bucket=BUCKET)
            break
        except Exception:
            time.sleep(0.1)
    requests.clear()
    return s3, requests


def _one_worker(s3: Any, requests: Counter[str], plan: Any, shard_size: int, threads: int) -> dict[str, Any]:
    """Plan step (timed), then shard 0 by one worker (timed)."""
    from adapters.export_shards import run_shard, write_plan
    from adapters.export_writer import S3Destination

    dest = S3Destination(BUCKET, "exports/bench/v1/", s3)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    document = write_plan(plan, dest, "v1", dataset="bench", shard_size=shard_size, extra={})
    plan_cpu, plan_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    requests.clear()
    cpu1, wall1 = time.process_time(), time.perf_counter()
    marker = run_shard(dest, 0, threads)
    cpu, wall = time.process_time() - cpu1, time.perf_counter() - wall1
    images = marker["images"] + len(marker["missing"])
    total = sum(requests.values())
    return {
        "plan": {"cpu": plan_cpu, "wall": plan_wall, "shards": len(document["shards"])},
        "shard": {
            "images": images,
            "images_missing": len(marker["missing"]),
            "threads": threads,
            "seconds": round(wall, 3),
            "images_per_second_per_worker": round(images / wall),
            "worker_cpu_ms_per_image": round(1000 * cpu / images, 3),
            "requests_by_operation": dict(sorted(requests.items())),
            "requests_per_image": round(total / images, 4),
        },
    }


def bench_stub(images: int, shard_size: int, threads: int) -> dict[str, Any]:
    """Plan step and one worker against the keep-alive stub."""
    plan_cpu0 = time.process_time()
    plan = _plan(images)
    planning_cpu = time.process_time() - plan_cpu0
    server = start_endpoint(_serve_storing_stub, _free_port())
    try:
        s3, requests = _counting_client(threads)
        result = _one_worker(s3, requests, plan, shard_size, threads)
    finally:
        server.terminate()
        server.join()
    files = result["plan"]
    return {
        "plan_step": {
            "images": images,
            "shard_size": shard_size,
            "shard_files": files["shards"],
            "planning_cpu_ms_per_image": round(1000 * planning_cpu / images, 4),
            "shard_files_cpu_ms_per_image": round(1000 * files["cpu"] / images, 4),
            "cpu_ms_per_image": round(1000 * (planning_cpu + files["cpu"]) / images, 4),
        },
        "keepalive_stub": result["shard"],
    }


def bench_moto(shard_size: int, threads: int) -> dict[str, Any]:
    """One worker copying a ``shard_size`` shard of real (tiny) objects in moto's server."""
    from concurrent.futures import ThreadPoolExecutor

    plan = _plan(shard_size)
    server = start_endpoint(_serve, _free_port())
    try:
        s3, requests = _counting_client(threads)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            keys = [r.source_ref.split("/", 3)[3] for r in plan.records]
            list(pool.map(lambda key: s3.put_object(Bucket=BUCKET, Key=key, Body=TINY_IMAGE), keys))
        setup = time.perf_counter() - t0
        result = _one_worker(s3, requests, plan, shard_size, threads)["shard"]
    finally:
        server.terminate()
        server.join()
    return result | {"setup_seconds_excluded": round(setup, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000, help="images planned (plan step, stub)")
    parser.add_argument("--shard-size", type=int, default=2_000, help="images per shard (one worker)")
    parser.add_argument("--threads", type=int, default=48, help="copy threads per worker")
    parser.add_argument("--moto-shard-size", type=int, default=1_000, help="shard for moto's server (0 skips)")
    args = parser.parse_args()
    out: dict[str, Any] = {"cpu_count": os.cpu_count(), "load_average_1m_at_start": round(os.getloadavg()[0], 1)}
    out.update(bench_stub(args.images, args.shard_size, args.threads))
    if args.moto_shard_size:
        out["moto_server"] = bench_moto(args.moto_shard_size, args.threads)
    stub = out["keepalive_stub"]
    out["per_image_cost"] = {
        "plan_cpu_ms": out["plan_step"]["cpu_ms_per_image"],
        "worker_cpu_ms": stub["worker_cpu_ms_per_image"],
        "s3_requests_by_worker": stub["requests_per_image"],
        "note": (
            "per image: one CopyObject and one PutObject (label); per shard: one GET of the shard file, "
            "one listing, one GET and one PUT of the done marker"
        ),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
