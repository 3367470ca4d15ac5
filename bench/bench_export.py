"""Benchmark the YOLO export: the conversion path (no S3) and a full export against a local S3 endpoint.

Prints one JSON object:

- ``conversion``: manifest bytes -> per-image records (JSON parse, label choice, YOLO rows, split,
  stem, "later wins" union) for ``--convert`` workflow-style lines (final label + pre-labels +
  labelloop-meta, two boxes each), best of ``--repeat``; images per CPU-second of ONE core
  (``process_time``; the planner is single-threaded) and the process RSS growth, i.e. memory per
  planned image;
- ``full_export``: ``--images`` images + one output manifest in a moto server bound to 127.0.0.1
  (``ThreadedMotoServer`` in a child process), exported by the Lambda handler itself
  (``AWS_ENDPOINT_URL`` points at the server): wall time, images/s, every S3 request counted by
  operation and per image, and the exporter's own CPU per image. The wall time is bounded by the
  emulator (~100-200 requests/s here), not by the exporter: requests per image and exporter CPU
  are the numbers that carry over to AWS;
- ``writer_keepalive_stub``: the writer alone against a do-nothing S3-shaped endpoint that keeps
  connections open like S3: the exporter's own CPU per image (botocore signing, HTTP, XML), i.e.
  what bounds a 100k-image export in one function once S3 latency is hidden by the thread pool.

Run: ``PYTHONPATH=.:lambdas .venv/bin/python bench/bench_export.py --convert 100000 --images 20000``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import AUTO_ATTRIBUTE, META_KEY, OUTPUT_MANIFEST, PRELABEL_ATTRIBUTE
from labelloop_core.export import ExportPlanner
from labelloop_core.manifest import bbox_label_line

LABELS = ["car", "person", "bike"]


def workflow_lines(count: int, dataset: str = "bench", bucket: str = "bench-data") -> list[bytes]:
    """Output-manifest lines as the workflow writes them (label + pre-labels + labelloop-meta)."""
    registry = ClassRegistry(LABELS)
    lines = []
    for i in range(count):
        key = f"incoming/{dataset}/cam{i % 7}/frame_{i:07d}.jpg"
        boxes = [Box("car", 10 + i % 50, 20, 100, 80, 0.91), Box("person", 200, 100, 50, 120, 0.83)]
        line = bbox_label_line(f"s3://{bucket}/{key}", AUTO_ATTRIBUTE, (640, 480, 3), boxes, registry, False, "x")
        pre = bbox_label_line(f"s3://{bucket}/{key}", PRELABEL_ATTRIBUTE, (640, 480, 3), boxes, registry, False, "p")
        line.update({k: v for k, v in pre.items() if k != "source-ref"})
        line[META_KEY] = {
            "dataset": dataset,
            "batch_id": "b1",
            "key": key,
            "labeled_key": key,
            "width": 640,
            "height": 480,
            "label_attribute": AUTO_ATTRIBUTE,
        }
        lines.append(json.dumps(line).encode() + b"\n")
    return lines


def _rss_mb() -> float:
    """Current resident set size (Linux /proc), falling back to the peak where /proc is absent."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for row in status:
                if row.startswith("VmRSS:"):
                    return int(row.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _PeakRss:
    """Samples the current RSS every 50 ms on a thread; ``peak`` is the highest value seen."""

    def __init__(self) -> None:
        self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_mb())

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def bench_conversion(count: int, repeat: int) -> dict[str, Any]:
    """Best-of-``repeat`` planning of ``count`` lines."""
    lines = workflow_lines(count)
    best_cpu = best_wall = float("inf")
    rss_before = _rss_mb()
    records = 0
    sampler = _PeakRss()
    sampler.__enter__()
    for _ in range(repeat):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        planner = ExportPlanner(LABELS, val_fraction=0.2)
        planner.add_manifest("bench.manifest", lines)
        plan = planner.plan()
        best_cpu = min(best_cpu, time.process_time() - cpu0)
        best_wall = min(best_wall, time.perf_counter() - wall0)
        records = len(plan.records)
        del planner, plan
    sampler.__exit__()
    rss_after = sampler.peak
    return {
        "images": records,
        "line_bytes_avg": round(sum(map(len, lines)) / len(lines)),
        "best_cpu_seconds": round(best_cpu, 3),
        "best_wall_seconds": round(best_wall, 3),
        "images_per_cpu_second_one_core": round(records / best_cpu),
        "images_per_wall_second": round(records / best_wall),
        "peak_rss_growth_mb": round(rss_after - rss_before, 1),
        "peak_rss_growth_bytes_per_image": round((rss_after - rss_before) * 1024 * 1024 / max(records, 1)),
    }


def _serve(port: int) -> None:
    """Child process: a moto server on 127.0.0.1 (own process, so it does not share our GIL)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    while True:
        time.sleep(3600)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_endpoint(target: Any, port: int) -> multiprocessing.Process:
    """Start an S3-shaped endpoint process on ``port`` and point this process's AWS clients at it."""
    server = multiprocessing.Process(target=target, args=(port,), daemon=True)
    server.start()
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    return server


def bench_full_export(images: int, threads: int) -> dict[str, Any]:
    """Export ``images`` images through the handler against a moto server on 127.0.0.1."""
    server = start_endpoint(_serve, _free_port())
    os.environ.update(
        {
            "DATA_BUCKET": "bench-data",
            "LABELS": json.dumps(LABELS),
            "COPY_THREADS": str(threads),
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    try:
        import boto3
        from botocore.config import Config

        setup = boto3.client("s3", config=Config(max_pool_connections=32))
        for _attempt in range(100):  # the server process needs a moment to listen
            try:
                setup.create_bucket(Bucket="bench-data")
                break
            except Exception:
                time.sleep(0.1)
        lines = workflow_lines(images)
        body = b"\xff\xd8\xff\xe0" + b"\x00" * 2000  # 2 KB "JPEG": the copy cost is per request here
        t0 = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            list(
                pool.map(
                    lambda i: setup.put_object(
                        Bucket="bench-data", Key=f"incoming/bench/cam{i % 7}/frame_{i:07d}.jpg", Body=body
                    ),
                    range(images),
                )
            )
        setup.put_object(Bucket="bench-data", Key=f"work/batches/bench/b1/{OUTPUT_MANIFEST}", Body=b"".join(lines))
        setup_seconds = time.perf_counter() - t0

        from handlers import export_yolo

        requests: Counter[str] = Counter()
        lock = threading.Lock()

        def count(model: Any, **_: Any) -> None:
            with lock:
                requests[model.name] += 1

        export_yolo._s3().meta.events.register("before-call.s3", count)
        event = {
            "id": "bench",
            "source": "labelloop.workflow",
            "detail-type": "Batch Labeled",
            "detail": {
                "dataset": "bench",
                "batch_id": "b1",
                "output_manifest": f"s3://bench-data/work/batches/bench/b1/{OUTPUT_MANIFEST}",
            },
        }
        del lines
        rss_before = _rss_mb()
        with _PeakRss() as sampler:
            t1, cpu1 = time.perf_counter(), time.process_time()
            result = export_yolo.handler(event, None)
            seconds = time.perf_counter() - t1
            client_cpu = time.process_time() - cpu1
        rss_after = sampler.peak
        t2 = time.perf_counter()
        again = export_yolo.handler(event, None)
        redelivery_seconds = time.perf_counter() - t2
    finally:
        server.terminate()
        server.join()
    total = sum(requests.values())
    return {
        "images": result["counts"]["images"],
        "threads": threads,
        "setup_seconds_excluded": round(setup_seconds, 1),
        "seconds": round(seconds, 2),
        "images_per_second": round(images / seconds),
        "requests_by_operation": dict(sorted(requests.items())),
        "requests_per_image": round(total / images, 4),
        "exporter_cpu_ms_per_image": round(1000 * client_cpu / images, 3),
        "peak_rss_growth_mb": round(rss_after - rss_before, 1),
        "redelivery": {"status": again["status"], "seconds": round(redelivery_seconds, 2)},
        "projection_100k_images_seconds_at_this_rate": round(100_000 / (images / seconds)),
    }


def _serve_keepalive_stub(port: int, keep: str | None = None) -> None:
    """Child process: the smallest S3-shaped endpoint (HTTP/1.1 keep-alive, answers without work).

    PUT answers 200 (CopyObject gets its XML result), GET/HEAD answer 404 NoSuchKey, listings are
    empty. It measures what the EXPORTER costs per image when the endpoint keeps connections open,
    as S3 does (moto's server closes every connection, which inflates the client's CPU). With
    ``keep``, PUT bodies whose path contains it are stored and served back by GET (what a shard
    worker reads back: its shard file and done markers).
    """
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import unquote, urlsplit

    store: dict[str, bytes] = {}
    lock = threading.Lock()
    copy_result = (
        b'<?xml version="1.0" encoding="UTF-8"?><CopyObjectResult><ETag>"e"</ETag>'
        b"<LastModified>2026-11-23T00:00:00.000Z</LastModified></CopyObjectResult>"
    )
    missing = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>no</Message></Error>'
    listing = (
        b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><KeyCount>0</KeyCount>'
        b"<IsTruncated>false</IsTruncated></ListBucketResult>"
    )

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:
            return None

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", '"e"')
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("x-amz-copy-source"):
                self._reply(200, copy_result)
                return
            if keep is not None and keep in self.path:
                with lock:
                    store[unquote(urlsplit(self.path).path)] = body
            self._reply(200, b"")

        def do_GET(self) -> None:
            if "list-type=2" in self.path:
                self._reply(200, listing)
                return
            with lock:
                body = store.get(unquote(urlsplit(self.path).path))
            self._reply(404, missing) if body is None else self._reply(200, body)

        def do_HEAD(self) -> None:
            self._reply(404, b"")

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def bench_writer_keepalive(images: int, threads: int) -> dict[str, Any]:
    """`write_export` to an S3 destination on the keep-alive stub: the exporter's own cost per image."""
    from adapters.export_writer import S3Destination, s3_client, write_export

    port = _free_port()
    server = multiprocessing.Process(target=_serve_keepalive_stub, args=(port,), daemon=True)
    server.start()
    saved = os.environ.get("AWS_ENDPOINT_URL")
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "bench"),
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    try:
        time.sleep(0.5)
        planner = ExportPlanner(LABELS, val_fraction=0.2)
        planner.add_manifest("bench.manifest", workflow_lines(images))
        plan = planner.plan()
        s3 = s3_client(threads)
        t0, cpu0 = time.perf_counter(), time.process_time()
        write_export(plan, S3Destination("bench-data", "exports/bench/v/", s3), "v", threads=threads)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        server.terminate()
        server.join()
        if saved is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = saved
    return {
        "images": images,
        "threads": threads,
        "seconds": round(seconds, 2),
        "images_per_second": round(images / seconds),
        "exporter_cpu_ms_per_image": round(1000 * cpu / images, 3),
        "cpu_seconds_for_100k_images": round(100_000 * cpu / images),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--convert", type=int, default=100_000, help="lines for the conversion benchmark")
    parser.add_argument("--repeat", type=int, default=3, help="conversion runs (best is reported)")
    parser.add_argument("--images", type=int, default=20_000, help="images for the full export (0 to skip)")
    parser.add_argument("--threads", type=int, default=48, help="copy/put threads of the export")
    parser.add_argument("--stub-images", type=int, default=20_000, help="images for the keep-alive stub (0 skips)")
    args = parser.parse_args()
    out: dict[str, Any] = {"cpu_count": os.cpu_count()}
    if args.images:  # first, so its memory reading is not masked by the conversion's freed arenas
        out["full_export"] = bench_full_export(args.images, args.threads)
    if args.stub_images:
        out["writer_keepalive_stub"] = bench_writer_keepalive(args.stub_images, args.threads)
    out["conversion"] = bench_conversion(args.convert, args.repeat)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
