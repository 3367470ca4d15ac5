"""Label Studio as a `ReviewBackend`: one project per dataset, one task per image, answers back as GT lines.

The Label Studio token lives in Secrets Manager (``LABEL_STUDIO_TOKEN_SECRET_ARN``): the secret is
either the bare token or JSON ``{"token": ..., "s3": {"accessKeyId", "secretAccessKey", "endpoint",
"region"}}`` when Label Studio must read the bucket with explicit credentials rather than its own
environment's. It is read at run time, kept in memory for a few minutes, and never logged.

The batch's state beside its files: ``<batch_prefix>labelstudio.json`` (project id and URL, when
the review started, how many tasks). Completion is Label Studio's ``is_labeled`` for every task of
the batch; a skipped task stays open. A task that went missing (deleted in the UI, or an import
lost to a crash) is imported again by the next `outcome`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from adapters.aws import client
from adapters.labelstudio import LabelStudioClient, S3Access
from adapters.review_backends import ReviewBatch
from adapters.s3 import get_json, iter_lines, put_json, uri
from labelloop_core.contract import META_KEY, PRELABEL_ATTRIBUTE, Env, labelstudio_open_key, labelstudio_state_file
from labelloop_core.labelstudio import (
    KEY_FIELD,
    LabelStudioError,
    batch_state,
    object_key,
    output_line,
    project_key,
    task_for_line,
)
from labelloop_core.labelstudio_verify import verify_output_line
from labelloop_core.manifest import dumps_line, iter_manifest

#: Header carrying the webhook's shared secret (Label Studio sends static custom headers only).
WEBHOOK_HEADER = "X-LabelLoop-Webhook-Secret"
#: Seconds a secret value is reused before Secrets Manager is asked again (rotation is picked up).
SECRET_TTL = 300.0


@dataclass(frozen=True)
class LabelStudioSettings:
    """What the Label Studio backend needs besides the batch (read from the environment once)."""

    url: str
    token_secret_arn: str
    namespace: str
    labels: tuple[str, ...]
    model_version: str
    workers_per_object: int = 1
    webhook_url: str | None = None
    webhook_secret_arn: str | None = None
    presign_ttl_minutes: int = 60


@dataclass(frozen=True)
class Credentials:
    token: str
    s3: S3Access


_SECRETS: dict[str, tuple[str, float]] = {}


def secret_value(arn: str) -> str:
    """A Secrets Manager string, cached for `SECRET_TTL` seconds per container."""
    cached = _SECRETS.get(arn)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    try:
        value = client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        raise LabelStudioError(f"cannot read the Label Studio secret {arn}: {code}") from None
    _SECRETS[arn] = (value, time.monotonic() + SECRET_TTL)
    return str(value)


def parse_credentials(raw: str) -> Credentials:
    """The bare token, or ``{"token", "s3": {...}}`` (see the module doc); errors never echo the value."""
    text = raw.strip()
    if not text.startswith("{"):
        if not text:
            raise LabelStudioError("the Label Studio token secret is empty")
        return Credentials(text, S3Access())
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        raise LabelStudioError("the Label Studio token secret looks like JSON but does not parse") from None
    token = document.get("token") if isinstance(document, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise LabelStudioError('the Label Studio token secret JSON needs a non-empty "token"')
    s3 = document.get("s3") or {}
    if not isinstance(s3, dict):
        raise LabelStudioError('"s3" in the Label Studio token secret must be an object')
    return Credentials(
        token.strip(),
        S3Access(
            endpoint=s3.get("endpoint"),
            region=s3.get("region"),
            access_key_id=s3.get("accessKeyId"),
            secret_access_key=s3.get("secretAccessKey"),
        ),
    )


class LabelStudioReview:
    """The Label Studio review backend (see the module doc)."""

    name = "labelstudio"

    def __init__(
        self, settings: LabelStudioSettings, make_client: Callable[[str, str], LabelStudioClient] | None = None
    ) -> None:
        self.settings = settings
        self._make_client = make_client or LabelStudioClient

    # -- plumbing -------------------------------------------------------------------------------
    def _credentials(self) -> Credentials:
        return parse_credentials(secret_value(self.settings.token_secret_arn))

    def client(self) -> LabelStudioClient:
        return self._make_client(self.settings.url, self._credentials().token)

    @staticmethod
    def state_key(batch: ReviewBatch) -> str:
        """The review's state beside the batch's files; each verify-then-adjust stage has its own."""
        return state_key(batch.batch_prefix, batch.stage)

    def _state(self, batch: ReviewBatch) -> dict[str, Any] | None:
        try:
            value = get_json(batch.bucket, self.state_key(batch))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        return value if isinstance(value, dict) else None

    def _lines(self, batch: ReviewBatch) -> Iterator[dict[str, Any]]:
        for _, line in iter_manifest(iter_lines(batch.bucket, batch.manifest_key)):
            yield line

    def _tasks(self, batch: ReviewBatch) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        tasks, problems = [], []
        for line in self._lines(batch):
            try:
                tasks.append(
                    task_for_line(
                        line,
                        batch_id=batch.batch_id,
                        labels=self.settings.labels,
                        prelabel_attribute=PRELABEL_ATTRIBUTE,
                        model_version=self.settings.model_version,
                    )
                )
            except LabelStudioError as exc:
                key = (line.get(META_KEY) or {}).get("key")
                problems.append({"key": str(key), "reason": str(exc)})
        return tasks, problems

    # -- the interface --------------------------------------------------------------------------
    def ensure_project(self, ls: LabelStudioClient, batch: ReviewBatch) -> dict[str, Any]:
        """The dataset's project with the bucket's storage and the webhook in place."""
        cfg = self.settings
        verify = batch.task_mode == "verify"
        project = ls.ensure_project(
            project_key(cfg.namespace, batch.dataset, batch.task_mode),
            title=f"LabelLoop {batch.dataset}" + (" (verify)" if verify else ""),
            labels=cfg.labels,
            model_version=cfg.model_version,
            overlap=cfg.workers_per_object,
            task_mode=batch.task_mode,
        )
        project_id = int(project["id"])
        ls.ensure_s3_storage(
            project_id, batch.bucket, access=self._credentials().s3, presign_ttl_minutes=cfg.presign_ttl_minutes
        )
        if cfg.webhook_url and cfg.webhook_secret_arn:
            ls.ensure_webhook(project_id, cfg.webhook_url, {WEBHOOK_HEADER: secret_value(cfg.webhook_secret_arn)})
        return project

    def start(self, batch: ReviewBatch) -> dict[str, Any]:
        ls = self.client()
        project = self.ensure_project(ls, batch)
        project_id = int(project["id"])
        state = self._state(batch) or {"started_at": datetime.now(UTC).isoformat()}
        tasks, problems = self._tasks(batch)
        state.update(
            {
                "backend": self.name,
                "job_name": batch.job_name,
                "stage": batch.stage,
                "task_mode": batch.task_mode,
                "manifest": batch.manifest,
                "project_id": project_id,
                "project_url": ls.project_url(project_id),
                "tasks": len(tasks),
                "not_importable": problems[:1000],
            }
        )
        # Recorded BEFORE importing: a crash after the import finds the project and the tasks by key.
        put_json(batch.bucket, self.state_key(batch), state)
        counts = ls.import_tasks(project_id, batch.batch_id, tasks)
        return {"job_name": batch.job_name, "project_id": project_id, "project_url": state["project_url"], **counts}

    def outcome(self, batch: ReviewBatch) -> dict[str, Any]:
        state = self._state(batch)
        summary: dict[str, Any] = {
            "job_name": batch.job_name,
            "job_arn": None,
            "status": "InProgress",
            "label_attribute": batch.job_name,
            "output_manifest": None,
            "counters": {},
            "failure_reason": None,
            "backend": self.name,
        }
        if state is None:  # start has not run (or not got far): nothing to observe yet
            return summary
        ls = self.client()
        project_id = int(state["project_id"])
        summary["project_url"] = state.get("project_url")
        found = ls.batch_tasks(project_id, batch.batch_id)
        chosen = _best_by_key(found)
        lines = list(self._lines(batch))
        expected = {object_key(batch.batch_id, str(line[META_KEY]["key"])) for line in lines}
        tasks, _ = self._tasks(batch)
        importable = {str(t["data"][KEY_FIELD]) for t in tasks}
        missing = [t for t in tasks if t["data"][KEY_FIELD] not in chosen]
        if missing:  # deleted in the UI or lost to a crash: put them back (idempotent by key)
            ls.import_tasks(project_id, batch.batch_id, missing)
        states = {s.key: s for s in batch_state(chosen.values())}
        labeled = sum(1 for key in importable if key in states and states[key].labeled)
        summary["counters"] = {
            "TotalLabeled": labeled,
            "HumanLabeled": labeled,
            "Unlabeled": len(importable) - labeled,
            "Skipped": sum(
                1 for key in importable if key in states and states[key].skipped and not states[key].labeled
            ),
            "FailedNonRetryableError": len(expected - importable),
        }
        if missing or labeled < len(importable):
            return summary
        self._write_output(batch, lines, chosen)
        summary.update({"status": "Completed", "output_manifest": uri(batch.bucket, batch.output_key)})
        return summary

    def _write_output(self, batch: ReviewBatch, lines: list[dict[str, Any]], chosen: Mapping[str, Any]) -> None:
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        rows = []
        convert = verify_output_line if batch.task_mode == "verify" else output_line
        for line in lines:
            task = chosen.get(object_key(batch.batch_id, str(line[META_KEY]["key"])))
            rows.append(
                convert(
                    line,
                    task,
                    attribute=batch.job_name,
                    labels=self.settings.labels,
                    prelabel_attribute=PRELABEL_ATTRIBUTE,
                    created=created,
                )
                if task is not None
                else line
            )
        body = "".join(dumps_line(row) + "\n" for row in rows).encode("utf-8")
        client("s3").put_object(
            Bucket=batch.bucket, Key=batch.output_key, Body=body, ContentType="application/jsonlines"
        )

    def started_at(self, batch: ReviewBatch) -> datetime | None:
        state = self._state(batch)
        try:
            return datetime.fromisoformat(str((state or {}).get("started_at")))
        except ValueError:
            return None

    def stop(self, batch: ReviewBatch, reason: str) -> None:
        """Label Studio has no job to stop: the tasks stay in the project; the batch records why it ended."""
        state = self._state(batch) or {}
        put_json(batch.bucket, self.state_key(batch), {**state, "stopped": reason})


def _best_by_key(tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One task per LabelLoop key: a labeled copy first, then the most answered, then the oldest."""
    best: dict[str, dict[str, Any]] = {}

    def rank(task: Mapping[str, Any]) -> tuple[int, int, int]:
        return (0 if task.get("is_labeled") else 1, -len(task.get("annotations") or []), int(task.get("id") or 0))

    for task in tasks:
        key = (task.get("data") or {}).get(KEY_FIELD)
        if isinstance(key, str) and (key not in best or rank(task) < rank(best[key])):
            best[key] = task
    return best


def settings_from_env() -> LabelStudioSettings:
    """The backend's settings from a function's environment (call once per container)."""
    from adapters import env
    from labelloop_core import limits

    raw_labels = env.text("LABELS")
    try:
        labels = json.loads(raw_labels)
    except json.JSONDecodeError:
        raise env.EnvError(f"environment variable LABELS must be a JSON list, got {raw_labels!r}") from None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise env.EnvError(f"environment variable LABELS must be a non-empty JSON list of names, got {labels!r}")
    url = env.text(Env.LABEL_STUDIO_URL)
    if not url.startswith(("http://", "https://")):
        raise env.EnvError(f"environment variable LABEL_STUDIO_URL must be an http(s) URL, got {url!r}")
    return LabelStudioSettings(
        url=url.rstrip("/"),
        token_secret_arn=env.text(Env.LABEL_STUDIO_TOKEN_SECRET_ARN),
        namespace=env.text(Env.LABEL_STUDIO_NAMESPACE, "labelloop"),
        labels=tuple(labels),
        model_version=env.text(Env.MODEL_VERSION, "labelloop-model"),
        workers_per_object=env.bounded(Env.WORKERS_PER_OBJECT, limits.WORKERS_PER_OBJECT),
        webhook_url=env.text(Env.LABEL_STUDIO_WEBHOOK_URL, "") or None,
        webhook_secret_arn=env.text(Env.LABEL_STUDIO_WEBHOOK_SECRET_ARN, "") or None,
        presign_ttl_minutes=env.bounded(Env.LABEL_STUDIO_PRESIGN_TTL_MINUTES, limits.LABEL_STUDIO_PRESIGN_TTL_MINUTES),
    )


def state_key(batch_prefix: str, stage: str = "") -> str:
    """``labelstudio.json`` (adjust mode), ``labelstudio-verify.json`` / ``labelstudio-adjust.json`` (stages)."""
    return batch_prefix + labelstudio_state_file(stage)


def open_key(work_prefix: str, job_name: str) -> str:
    """The marker of a Label Studio review whose workflow still waits (listed by the reconcile sweep)."""
    return labelstudio_open_key(work_prefix, job_name)
