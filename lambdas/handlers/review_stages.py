"""Verify-then-adjust, between the jobs: split the review images into the verify and adjust stages.

Two actions of the workflow (``taskMode: verify``), both idempotent (each rewrites its outputs
from the same inputs):

- ``{"action": "plan", bucket, dataset, batch_id, batch_prefix}``: ``review.manifest`` ->
  ``verify.manifest`` (lines with model boxes, shown as verify tasks) and ``adjust.manifest``
  (lines without detections: nothing to verify, shown as adjust tasks). Out: ``{"verify",
  "adjust", "sent_to_adjust_without_detections"}``.
- ``{"action": "split", ..., "verify": <the verify job's summary or {"status": "skipped"}>}``:
  reads the verify job's output; images judged ``correct`` become final lines in
  ``verified.manifest`` (the model's boxes under ``labelloop-verified``), images judged
  ``incorrect`` or left without a usable verdict join ``adjust.manifest``. Out: the
  ``verification`` counts plus ``adjust`` (images for the adjustment job); also ``stages.json``.

Every line of ``verify.manifest`` ends in exactly one of ``verified.manifest`` or
``adjust.manifest``: a line missing from the job's output goes to adjustment with its reason.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from aws_lambda_powertools import Logger

from adapters import env
from adapters.aws import client
from adapters.s3 import iter_lines, parse_uri, put_json
from labelloop_core.batching import batch_fields
from labelloop_core.contract import META_KEY, REVIEW_MANIFEST, Env
from labelloop_core.manifest import ManifestError, dumps_line, iter_manifest
from labelloop_core.verification import (
    ADJUST,
    REASON_INCORRECT,
    REASON_NO_DETECTIONS,
    REASON_NO_VERDICT,
    STAGE_MANIFESTS,
    VERIFIED_MANIFEST,
    VERIFY,
    adjust_line,
    read_verdict,
    split_stage,
    verified_line,
    with_task,
)

logger = Logger()

STAGES_FILE = "stages.json"


class StageError(ValueError):
    """The event breaks the workflow contract or a stage's files are unreadable; the message says which."""


@dataclass(frozen=True)
class ReviewStageSettings:
    """Environment of the review-stage steps, validated once per container."""

    bucket: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReviewStageSettings:
        """Read and validate the environment; every error names its variable."""
        return cls(bucket=env.text(Env.DATA_BUCKET, environ=environ))


@functools.cache
def settings() -> ReviewStageSettings:
    return ReviewStageSettings.from_env()


def _lines(bucket: str, key: str) -> Iterator[dict[str, Any]]:
    try:
        for _, line in iter_manifest(iter_lines(bucket, key)):
            yield line
    except ManifestError as exc:
        raise StageError(f"s3://{bucket}/{key}: {exc}") from None


def _key_of(line: Mapping[str, Any]) -> str:
    meta = line.get(META_KEY)
    key = meta.get("key") if isinstance(meta, Mapping) else None
    return str(key or line.get("source-ref"))


def _upload(handle: IO[bytes], bucket: str, key: str) -> None:
    handle.seek(0)
    client("s3").upload_fileobj(handle, bucket, key, ExtraArgs={"ContentType": "application/jsonlines"})


def plan(bucket: str, batch_prefix: str) -> dict[str, int]:
    """Split ``review.manifest`` by stage (see the module doc)."""
    counts = {VERIFY: 0, ADJUST: 0}
    with tempfile.TemporaryFile() as verify, tempfile.TemporaryFile() as adjust:
        for line in _lines(bucket, f"{batch_prefix}{REVIEW_MANIFEST}"):
            if split_stage(line) == VERIFY:
                verify.write(dumps_line(with_task(line, VERIFY)).encode() + b"\n")
                counts[VERIFY] += 1
            else:
                adjust.write(dumps_line(adjust_line(line, REASON_NO_DETECTIONS)).encode() + b"\n")
                counts[ADJUST] += 1
        _upload(verify, bucket, f"{batch_prefix}{STAGE_MANIFESTS[VERIFY]}")
        _upload(adjust, bucket, f"{batch_prefix}{STAGE_MANIFESTS[ADJUST]}")
    return {"verify": counts[VERIFY], "adjust": counts[ADJUST], "sent_to_adjust_without_detections": counts[ADJUST]}


def _verify_output(verify: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(job name, label attribute, output manifest URI) of a completed verify job; None when skipped."""
    if verify.get("status") == "skipped":
        return None
    if verify.get("status") != "Completed":
        raise StageError(f"the verify job did not complete (status {verify.get('status')!r}); cannot split verdicts")
    job, attribute, output = verify.get("job_name"), verify.get("label_attribute"), verify.get("output_manifest")
    if not all(isinstance(v, str) and v for v in (job, attribute, output)):
        raise StageError(f"verify job summary lacks job_name, label_attribute or output_manifest: {dict(verify)!r}")
    return str(job), str(attribute), str(output)


def split(bucket: str, batch_prefix: str, verify: Mapping[str, Any]) -> dict[str, Any]:
    """Route the verify job's verdicts (see the module doc)."""
    counts = {"verified_correct": 0, "judged_incorrect": 0, "no_verdict": 0, "sent_to_adjust_without_detections": 0}
    found = _verify_output(verify)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    with tempfile.TemporaryFile() as verified, tempfile.TemporaryFile() as adjust:

        def to_adjust(line: Mapping[str, Any]) -> None:
            adjust.write(dumps_line(line).encode() + b"\n")

        for line in _lines(bucket, f"{batch_prefix}{REVIEW_MANIFEST}"):
            if split_stage(line) == ADJUST:
                to_adjust(adjust_line(line, REASON_NO_DETECTIONS))
                counts["sent_to_adjust_without_detections"] += 1
        shown = {_key_of(line): line for line in _lines(bucket, f"{batch_prefix}{STAGE_MANIFESTS[VERIFY]}")}
        counts["verify"] = len(shown)
        if found is not None:
            job, attribute, output = found
            out_bucket, out_key = parse_uri(output)
            for line in _lines(out_bucket, out_key):
                if shown.pop(_key_of(line), None) is None:
                    continue  # not one of this batch's verify lines (or a repeat): never labeled twice
                verdict = read_verdict(line, attribute)
                if verdict.correct:
                    verified.write(dumps_line(verified_line(line, attribute, verdict, job, created)).encode() + b"\n")
                    counts["verified_correct"] += 1
                elif verdict.verdict is None:
                    to_adjust(adjust_line(line, REASON_NO_VERDICT, attribute, verdict))
                    counts["no_verdict"] += 1
                else:
                    to_adjust(adjust_line(line, REASON_INCORRECT, attribute, verdict))
                    counts["judged_incorrect"] += 1
        for line in shown.values():  # verify lines the job's output lacks: people adjust them instead
            to_adjust(adjust_line(line, REASON_NO_VERDICT))
            counts["no_verdict"] += 1
        _upload(verified, bucket, f"{batch_prefix}{VERIFIED_MANIFEST}")
        _upload(adjust, bucket, f"{batch_prefix}{STAGE_MANIFESTS[ADJUST]}")
    adjust_total = counts["judged_incorrect"] + counts["no_verdict"] + counts["sent_to_adjust_without_detections"]
    result = {**counts, "adjust": adjust_total, "verify_job": found[0] if found else None}
    put_json(bucket, f"{batch_prefix}{STAGES_FILE}", result)
    return result


def handle(event: Mapping[str, Any], cfg: ReviewStageSettings) -> dict[str, Any]:
    """Dispatch on ``action`` (see the module doc)."""
    bucket, dataset, batch_id, batch_prefix = batch_fields(event, cfg.bucket, StageError)
    action = event.get("action")
    if action == "plan":
        result = plan(bucket, batch_prefix)
    elif action == "split":
        verify = event.get("verify")
        if not isinstance(verify, Mapping):
            raise StageError("event field 'verify' must be the verify job's summary object")
        result = split(bucket, batch_prefix, verify)
    else:
        raise StageError(f"event field 'action' must be 'plan' or 'split', got {action!r}")
    logger.info("review stages", extra={"action": action, "dataset": dataset, "batch_id": batch_id, **result})
    return result


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (workflow PlanReviewStages / SplitVerdicts steps)."""
    return handle(event, settings())
