"""The README's "Scale and cost" table, computed from benchmark output (never typed in by hand).

    .venv/bin/python bench/bench_counters.py 200 > counters.json
    .venv/bin/python bench/bench_export_shards.py > shards.json
    .venv/bin/python bench/scale_table.py counters.json shards.json

Per image, from ``bench_counters.py`` (a whole pipeline run in the emulation): Lambda requests and
GB-s, Step Functions state transitions and S3 requests of every function but the export. The export
of 10k+ images is the distributed path, from ``bench_export_shards.py``: S3 requests and CPU per
image of a shard worker, images/s per worker. Wall time of the export at the configured
``export.maxConcurrency`` workers, capped by S3's documented 3,500 PUT/COPY/POST/DELETE requests per
second per prefix (a worker's copy goes to ``images/``, its label to ``labels/``: one request per
image in each prefix, so the cap is 3,500 images/s). Human review time is not in the table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "lambdas")]

from labelloop_core.pricing import PRICES as _TABLE  # noqa: E402
from labelloop_core.pricing import PRICES_DATE, PRICES_REGION  # noqa: E402

#: The orchestration prices of LabelLoop's one price table (labelloop_core/pricing.py), free tiers ignored.
_KEYS = (
    "sfn_per_1000_transitions",
    "lambda_arm64_per_gb_second",
    "lambda_per_million_requests",
    "s3_put_copy_post_list_per_1000",
    "s3_get_head_per_1000",
)
PRICES: dict[str, Any] = {"date": PRICES_DATE, "region": PRICES_REGION} | {k: _TABLE[k].usd for k in _KEYS}
S3_PREFIX_WRITES_PER_SECOND = 3500
SIZES = (10_000, 100_000, 1_000_000)
EXPORT_FUNCTION = "Export"  # logical id prefix of the single-function export (replaced by shards here)
SHARD_TRANSITIONS = 5  # per shard in the Distributed Map: iteration start, worker task, its result, retries aside


def _non_export(counters: dict[str, Any]) -> dict[str, float]:
    """Per-image figures of every function but the export (the table's export is the distributed one)."""
    images = counters["images"]
    functions = counters["lambda_by_function"]
    kept = {k: v for k, v in functions.items() if not k.startswith(EXPORT_FUNCTION)}
    by_function = counters["s3_by_function"]
    s3 = [v for k, v in by_function.items() if not k.startswith(EXPORT_FUNCTION)]
    return {
        "lambda_requests": sum(f["invocations"] for f in kept.values()) / images,
        "gb_seconds": sum(f["seconds"] * f["memory_mb"] / 1024 for f in kept.values()) / images,
        "transitions": counters["totals"]["state_transitions"] / images,
        "s3_tier1": sum(v["tier1"] for v in s3) / images,
        "s3_tier2": sum(v["tier2"] for v in s3) / images,
    }


def _export(counters: dict[str, Any], shards: dict[str, Any], config: Any) -> dict[str, float]:
    """Per-image figures of the distributed export, and its throughput."""
    cost = shards["per_image_cost"]
    memory = next(
        (f["memory_mb"] for k, f in counters["lambda_by_function"].items() if k.startswith(EXPORT_FUNCTION)), 2048
    )
    per_worker = shards["keepalive_stub"]["images_per_second_per_worker"]
    cpu_ms = cost["worker_cpu_ms"] + cost["plan_cpu_ms"]
    return {
        "lambda_requests": 1 / config.shard_size,
        "gb_seconds": cpu_ms / 1000 * memory / 1024,
        "transitions": SHARD_TRANSITIONS / config.shard_size,
        "s3_tier1": float(cost["s3_requests_by_worker"]),
        "s3_tier2": 0.0,
        "images_per_second": min(config.max_concurrency * per_worker, S3_PREFIX_WRITES_PER_SECOND),
        "per_worker": per_worker,
        "memory_mb": memory,
    }


def rows(counters: dict[str, Any], shards: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per size: counts, export wall time and dollars."""
    from infra.config import ExportConfig

    config = ExportConfig()
    pipeline, export = _non_export(counters), _export(counters, shards, config)
    out = []
    for images in SIZES:
        total = {k: (pipeline[k] + export[k]) * images for k in pipeline}
        dollars = {
            "step_functions": total["transitions"] / 1000 * PRICES["sfn_per_1000_transitions"],
            "lambda": total["gb_seconds"] * PRICES["lambda_arm64_per_gb_second"]
            + total["lambda_requests"] / 1e6 * PRICES["lambda_per_million_requests"],
            "s3": total["s3_tier1"] / 1000 * PRICES["s3_put_copy_post_list_per_1000"]
            + total["s3_tier2"] / 1000 * PRICES["s3_get_head_per_1000"],
        }
        out.append(
            {
                "images": images,
                "export_seconds": images / export["images_per_second"],
                **{k: round(v) for k, v in total.items()},
                "dollars": {k: round(v, 2) for k, v in dollars.items()} | {"total": round(sum(dollars.values()), 2)},
            }
        )
    return out


def markdown(counters: dict[str, Any], shards: dict[str, Any]) -> str:
    from infra.config import ExportConfig

    config = ExportConfig()
    export = _export(counters, shards, config)
    lines = [
        "| images | export wall time | state transitions | Lambda requests | Lambda GB-s | S3 PUT/COPY/LIST | "
        "S3 GET/HEAD | Step Functions $ | Lambda $ | S3 $ | orchestration $ |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows(counters, shards):
        d = row["dollars"]
        lines.append(
            f"| {row['images']:,} | {_duration(row['export_seconds'])} | {row['transitions']:,} | "
            f"{row['lambda_requests']:,} | {row['gb_seconds']:,} | {row['s3_tier1']:,} | {row['s3_tier2']:,} | "
            f"{d['step_functions']:,.2f} | {d['lambda']:,.2f} | {d['s3']:,.2f} | **{d['total']:,.2f}** |"
        )
    p = {k: _money(v) for k, v in PRICES.items() if isinstance(v, float)}
    lines += [
        "",
        f"Prices: {PRICES['region']} public list prices of {PRICES['date']} (Step Functions standard "
        f"{p['sfn_per_1000_transitions']} per 1,000 transitions; Lambda arm64 "
        f"{p['lambda_arm64_per_gb_second']} per GB-s and {p['lambda_per_million_requests']} per "
        f"million requests; S3 {p['s3_put_copy_post_list_per_1000']} per 1,000 PUT/COPY/POST/LIST and "
        f"{p['s3_get_head_per_1000']} per 1,000 GET/HEAD), free tiers ignored. Export wall time: "
        f"{config.max_concurrency} shard workers (`export.maxConcurrency`) at {export['per_worker']} images/s "
        f"each (`bench_export_shards.py`, keep-alive stub), capped at {S3_PREFIX_WRITES_PER_SECOND:,} images/s "
        "by S3's 3,500 PUT/COPY per second per prefix.",
    ]
    return "\n".join(lines)


def _money(value: float) -> str:
    text = f"{value:.10f}".rstrip("0")
    return "$" + (text + "0" if len(text.split(".")[1]) < 2 else text)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: scale_table.py COUNTERS.json SHARDS.json (bench outputs)")
    counters, shards = (json.loads(Path(p).read_text()) for p in argv)
    print(json.dumps({"prices": PRICES, "rows": rows(counters, shards)}, indent=2))
    print(markdown(counters, shards), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
