"""The distributed export's S3 side: write the plan, write one shard, publish (or record a failure).

Layout under the version folder (names in `labelloop_core.contract`):

- ``plan/shards/NNNNN.jsonl`` — the images of each shard (`labelloop_core.export_shards.shard_body`);
- ``plan/plan.json`` — written LAST by the plan step: the plan's summary, its class names, every
  shard with its image count and SHA-256, and what ``export.json`` repeats (trigger, certificate);
- ``plan/done/NNNNN.json`` — written by a shard worker once all its images and labels are in place:
  images, labels, boxes, seconds, the checksum of what it wrote, its missing images;
- ``export.json`` (conditional create, as in the single-function path) and ``data.yaml`` by the
  publish step once every shard is done; ``failed.json`` when a shard failed for good.

Every step is idempotent: a plan whose ``plan.json`` names the same fingerprint is not rewritten, a
shard with a done marker for the same shard file returns it, a shard re-run after a crash skips the
labels already present (their images were copied before them), and a published version only lets
``latest.json`` move forward.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from adapters.export_writer import (
    ExportConflict,
    ExportEmpty,
    S3Destination,
    _bounded_map,
    _jsonl,
    publish_latest,
)
from labelloop_core import contract
from labelloop_core.export import ExportPlan, ImageRecord
from labelloop_core.export_report import document_from_summary, export_data_yaml
from labelloop_core.export_shards import (
    execution_name,
    label_ranges,
    parse_shard,
    shard_body,
    shard_checksum,
    split_records,
)

__all__ = ["ShardsIncomplete", "publish", "record_failure", "run_shard", "start_execution", "write_plan"]

#: Extra fields a shard keeps per missing image, so publish can correct the counts (not in missing.jsonl).
_LOST_FIELDS = ("split", "label_text")


class ShardsIncomplete(RuntimeError):
    """Publish found shards without a done marker (or with one for another shard file)."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _put_json(dest: S3Destination, path: str, document: dict[str, Any]) -> None:
    dest.put(path, json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8"), "application/json")


def write_plan(
    plan: ExportPlan,
    dest: S3Destination,
    version: str,
    *,
    dataset: str,
    shard_size: int,
    extra: dict[str, Any],
    threads: int = 16,
) -> dict[str, Any]:
    """Write the shard files, ``dropped.jsonl``/``skipped.jsonl`` and, last, ``plan/plan.json``.

    Returns the plan document; a version whose plan document already has this fingerprint is
    returned as it is (a re-delivered event plans the same version again).
    """
    current = dest.read_json(contract.EXPORT_PLAN_FILE)
    if current is not None and current.get("fingerprint") == plan.fingerprint:
        return dict(current)
    chunks = split_records(plan.records, shard_size)

    def put_shard(index: int) -> dict[str, Any]:
        body = shard_body(chunks[index])
        dest.put(contract.export_shard_path(index), body, "application/jsonlines")
        return {"index": index, "images": len(chunks[index]), "sha256": _sha256(body)}

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(chunks)))) as pool:
        shards = list(pool.map(put_shard, range(len(chunks))))
    dest.put(contract.DROPPED_FILE, _jsonl(d.as_dict() for d in plan.dropped), "application/jsonlines")
    dest.put(contract.SKIPPED_FILE, _jsonl(s.as_dict() for s in plan.skipped), "application/jsonlines")
    document = {
        "version": version,
        "dataset": dataset,
        "fingerprint": plan.fingerprint,
        "class_names": list(plan.class_names),
        "summary": plan.summary(),
        "shard_size": shard_size,
        "shards": shards,
        "extra": extra,
        "planned": _now(),
    }
    _put_json(dest, contract.EXPORT_PLAN_FILE, document)
    return document


def _present_labels(dest: S3Destination, records: list[ImageRecord]) -> set[str]:
    """Label paths of ``records`` already written (a crashed attempt of this shard): one key range per split."""
    present: set[str] = set()
    for folder, first, last in label_ranges(records):
        paginator = dest.s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=dest.bucket, Prefix=dest.prefix + folder, StartAfter=dest.prefix + first[:-1])
        for page in pages:
            keys = [item["Key"][len(dest.prefix) :] for item in page.get("Contents", [])]
            present.update(k for k in keys if first <= k <= last)
            if keys and keys[-1] > last:
                break
    return present


def run_shard(dest: S3Destination, index: int, threads: int, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Copy shard ``index``'s images and write their labels; write and return its done marker.

    Per-image problems (source missing, unreadable) are recorded in the marker; any other error
    (throttling after the client's retries, 5xx, a destination that refuses writes) fails the
    shard, and the state machine retries it; the re-run skips what the failed attempt wrote.
    """
    started = clock()
    body = dest.s3.get_object(Bucket=dest.bucket, Key=dest.prefix + contract.export_shard_path(index))["Body"].read()
    done = dest.read_json(contract.export_shard_done_path(index))
    if done is not None and done.get("plan_sha256") == _sha256(body):
        return dict(done) | {"already_done": True}
    records = parse_shard(body)
    present = _present_labels(dest, records)
    missing: list[dict[str, Any]] = []

    def task(record: ImageRecord) -> str | None:
        reason = dest.copy_image(record.source_ref, record.image_path)
        if reason is None:
            dest.put(record.label_path, record.label_text.encode("utf-8"), "text/plain; charset=utf-8")
        return reason

    def on_done(record: ImageRecord, reason: str | None) -> None:
        if reason is not None:
            missing.append(
                {
                    "image": record.key,
                    "source_ref": record.source_ref,
                    "reason": reason,
                    "manifest": record.manifest,
                    "line": record.line_no,
                    "split": record.split,
                    "label_text": record.label_text,
                }
            )

    _bounded_map((r for r in records if r.label_path not in present), task, threads, on_done)
    gone = {m["image"] for m in missing}
    written = [r for r in records if r.key not in gone]
    marker = {
        "index": index,
        "images": len(written),
        "labels": len(written),
        "boxes": sum(len(r.label_text.splitlines()) for r in written),
        "seconds": round(clock() - started, 3),
        "resumed": len(present),
        "sha256": shard_checksum(written),
        "plan_sha256": _sha256(body),
        "missing": sorted(missing, key=lambda m: (m["manifest"], m["line"])),
        "finished": _now(),
    }
    _put_json(dest, contract.export_shard_done_path(index), marker)
    return marker


def _read_markers(dest: S3Destination, plan_doc: dict[str, Any]) -> list[dict[str, Any]]:
    shards = plan_doc["shards"]
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(shards)))) as pool:
        markers = list(pool.map(lambda s: dest.read_json(contract.export_shard_done_path(s["index"])), shards))
    pairs = zip(shards, markers, strict=True)
    incomplete = [s["index"] for s, m in pairs if not m or m.get("plan_sha256") != s["sha256"]]
    if incomplete:
        raise ShardsIncomplete(
            f"{len(incomplete)} of {len(shards)} shard(s) of {dest.uri} are not done (e.g. shard {incomplete[0]})"
        )
    return [m for m in markers if m]


def publish(dest: S3Destination, dataset_root: S3Destination) -> dict[str, Any]:
    """Write ``data.yaml``, ``missing.jsonl`` and ``export.json`` once every shard is done; move ``latest.json``.

    Raises `ShardsIncomplete` when a shard has no done marker, `ExportEmpty` when every image is
    missing (nothing is published), `ExportConflict` when another version completed this folder.
    """
    plan_doc = dest.read_json(contract.EXPORT_PLAN_FILE)
    if plan_doc is None:
        raise ShardsIncomplete(f"{dest.uri} has no {contract.EXPORT_PLAN_FILE}: the plan step did not finish")
    version = plan_doc["version"]
    current = dest.read_json(contract.EXPORT_FILE)
    if current is None:
        current = _publish_version(dest, plan_doc)
    elif current.get("version") != version:
        raise ExportConflict(f"{dest.uri} already holds export version {current.get('version')!r}")
    else:
        current["already_complete"] = True
    moved = publish_latest(dataset_root, version, current, dest.uri)
    return {"document": current, "latest_updated": moved}


def _publish_version(dest: S3Destination, plan_doc: dict[str, Any]) -> dict[str, Any]:
    markers = _read_markers(dest, plan_doc)
    missing = sorted((m for marker in markers for m in marker["missing"]), key=lambda m: (m["manifest"], m["line"]))
    lost = [(m["split"], m["label_text"]) for m in missing]
    public = [{k: v for k, v in m.items() if k not in _LOST_FIELDS} for m in missing]
    planned = sum(s["images"] for s in plan_doc["shards"])
    if planned and len(public) == planned:
        raise ExportEmpty(public)
    dest.put(contract.MISSING_FILE, _jsonl(public), "application/jsonlines")
    shards = [
        {k: marker[k] for k in ("index", "images", "labels", "boxes", "seconds", "sha256")}
        | {"images_missing": len(marker["missing"])}
        for marker in sorted(markers, key=lambda m: m["index"])
    ]
    document = document_from_summary(
        plan_doc["summary"],
        plan_doc["version"],
        plan_doc["dataset"],
        public,
        lost,
        sum(int(m.get("resumed", 0)) for m in markers),
        _now(),
        shards,
    )
    data_yaml = export_data_yaml(plan_doc["class_names"], document)  # the single-function export's text
    dest.put(contract.DATA_YAML_FILE, data_yaml.encode("utf-8"), "application/yaml")
    document.update(plan_doc.get("extra") or {})
    body = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")
    if not dest.create(contract.EXPORT_FILE, body, "application/json"):
        winner = dest.read_json(contract.EXPORT_FILE) or {}
        if winner.get("version") != plan_doc["version"]:
            raise ExportConflict(f"{dest.uri} was completed concurrently as version {winner.get('version')!r}")
        return dict(winner) | {"already_complete": True}
    return document


def record_shard_error(dest: S3Destination, index: int, exc: BaseException) -> None:
    """Best effort: keep why shard ``index`` failed for `record_failure` (a denied write is only logged)."""
    document = {"index": index, "error": type(exc).__name__, "message": str(exc)[:2000], "at": _now()}
    try:
        _put_json(dest, contract.export_shard_error_path(index), document)
    except Exception:  # the destination may be what fails; the state machine still has the error
        return


def record_failure(dest: S3Destination, error: str, cause: str) -> dict[str, Any]:
    """``failed.json``: why the distributed export stopped and which shards were done (``latest.json`` untouched)."""
    plan_doc = dest.read_json(contract.EXPORT_PLAN_FILE) or {}
    shards = plan_doc.get("shards", [])
    done = [s["index"] for s in shards if dest.read_json(contract.export_shard_done_path(s["index"])) is not None]
    listing = dest.s3.list_objects_v2(Bucket=dest.bucket, Prefix=dest.prefix + contract.EXPORT_SHARD_ERRORS_DIR)
    errors = [dest.read_json(item["Key"][len(dest.prefix) :]) or {} for item in listing.get("Contents", [])[:20]]
    errors = [e for e in errors if e.get("index") not in done]
    if errors:  # the shards' own errors say more than the Map's "tolerated failure threshold exceeded"
        first = errors[0]
        cause = f"shard {first.get('index')}: {first.get('error')}: {first.get('message')}; then {error}: {cause}"
    report = {
        "version": plan_doc.get("version"),
        "dataset": plan_doc.get("dataset"),
        "status": "failed",
        "error": error,
        "cause": cause[:4000],
        "shards_total": len(shards),
        "shards_done": len(done),
        "shards_not_done": sorted(set(s["index"] for s in shards) - set(done))[:100],
        "shard_errors": errors,
        "failed": _now(),
        "note": "latest.json was not moved; fix the cause and deliver the triggering event again to resume",
    }
    _put_json(dest, contract.EXPORT_FAILED_FILE, report)
    return report


#: Executions started for one version before the export gives up (each after a failed one).
MAX_ATTEMPTS = 5


def start_execution(sfn: Any, state_machine_arn: str, dataset: str, version: str, payload: dict[str, Any]) -> dict:
    """Start (or find) the export state machine's execution for this version; deterministic names.

    A running or succeeded execution of the version is the answer to a re-delivered event; after a
    failed, timed-out or aborted one the next attempt number starts a new execution (its complete
    shards are skipped). Returns ``{"execution_arn", "execution_status", "attempt"}``.
    """
    body = json.dumps(payload, sort_keys=True)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        name = execution_name(dataset, version, attempt)
        try:
            started = sfn.start_execution(stateMachineArn=state_machine_arn, name=name, input=body)
            return {"execution_arn": started["executionArn"], "execution_status": "STARTED", "attempt": attempt}
        except sfn.exceptions.ExecutionAlreadyExists:
            arn = state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name
            status = sfn.describe_execution(executionArn=arn)["status"]
            if status in {"RUNNING", "SUCCEEDED", "PENDING_REDRIVE"}:
                return {"execution_arn": arn, "execution_status": status, "attempt": attempt}
    raise RuntimeError(f"the export of version {version} failed {MAX_ATTEMPTS} times; see its failed.json")
