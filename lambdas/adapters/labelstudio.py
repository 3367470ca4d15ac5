"""Label Studio's REST API over plain HTTP (urllib): projects, S3 storage, webhooks, tasks, annotations.

The SDK is far too large for a zip Lambda, and LabelLoop needs a dozen calls. Every "ensure"
call is idempotent by LOOKUP, because Label Studio is not: importing the same task twice creates
two tasks, and a retried POST can too. Projects are found by a marker line in their description,
tasks by the LabelLoop key in their data, storages by bucket, webhooks by URL. The token is
never logged, never put in an error message, and only ever sent in the Authorization header.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labelloop_core.labelstudio import BATCH_FIELD, KEY_FIELD, label_config, project_marker

#: Tasks per import call and per page read (keeps each request well under Label Studio's limits).
IMPORT_CHUNK = 200
PAGE_SIZE = 100
#: HTTP statuses worth retrying for idempotent requests (server restarting, overloaded).
_RETRY_STATUS = {429, 502, 503, 504}


class LabelStudioApiError(RuntimeError):
    """A Label Studio call failed; the message has the method, path, status and the server's words."""

    def __init__(self, method: str, path: str, status: int | None, detail: str) -> None:
        self.status = status
        where = f"Label Studio {method} {path}"
        super().__init__(f"{where} failed ({status if status is not None else 'no response'}): {detail[:500]}")


@dataclass(frozen=True)
class S3Access:
    """How Label Studio reads the data bucket: its own credentials (all None) or explicit ones."""

    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None


def _is_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


class LabelStudioClient:
    """A small client for one Label Studio server (``url`` without a trailing slash)."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0, attempts: int = 4) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Label Studio URL must start with http:// or https://, got {url!r}")
        if not token:
            raise ValueError("Label Studio token is empty")
        self.url = url.rstrip("/")
        self._token = token
        self._access: tuple[str, float] | None = None
        self.timeout = timeout
        self.attempts = attempts

    # -- transport --------------------------------------------------------------------------------
    def _authorization(self) -> str:
        """Legacy tokens go as ``Token``; personal access tokens (JWT refresh) are exchanged for 5-minute access."""
        if not _is_jwt(self._token):
            return f"Token {self._token}"
        if self._access is None or self._access[1] < time.monotonic():
            body = self._send("POST", "/api/token/refresh/", {"refresh": self._token}, auth=False)
            self._access = (str(body["access"]), time.monotonic() + 240)
        return f"Bearer {self._access[0]}"

    def _send(self, method: str, path: str, payload: Any = None, *, auth: bool = True, retry: bool = False) -> Any:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        attempts = self.attempts if retry else 1
        for attempt in range(attempts):
            request = urllib.request.Request(self.url + path, data=data, method=method)
            request.add_header("Accept", "application/json")
            if data is not None:
                request.add_header("Content-Type", "application/json")
            if auth:
                request.add_header("Authorization", self._authorization())
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                return json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")
                if exc.code in _RETRY_STATUS and attempt + 1 < attempts:
                    time.sleep(min(2.0**attempt, 10.0))
                    continue
                raise LabelStudioApiError(method, path.split("?")[0], exc.code, detail) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt + 1 < attempts:
                    time.sleep(min(2.0**attempt, 10.0))
                    continue
                reason = getattr(exc, "reason", exc)
                raise LabelStudioApiError(
                    method, path.split("?")[0], None, f"{self.url} unreachable: {reason}"
                ) from None
        raise AssertionError("unreachable")

    def get(self, path: str) -> Any:
        """GET with retries (reads are safe to repeat)."""
        return self._send("GET", path, retry=True)

    def post(self, path: str, payload: Any) -> Any:
        """POST once: callers look up what a lost response may have created instead of retrying blindly."""
        return self._send("POST", path, payload)

    def patch(self, path: str, payload: Any) -> Any:
        return self._send("PATCH", path, payload, retry=True)

    def delete(self, path: str) -> None:
        self._send("DELETE", path, retry=True)

    def _pages(self, path: str, params: Mapping[str, Any], field: str) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            query = urllib.parse.urlencode({**params, "page": page, "page_size": PAGE_SIZE})
            try:
                body = self.get(f"{path}?{query}")
            except LabelStudioApiError as exc:
                if exc.status == 404 and page > 1:  # past the last page
                    return
                raise
            items = body if isinstance(body, list) else (body or {}).get(field) or []
            yield from items
            if isinstance(body, list) or not items or not (body.get("next") or len(items) == PAGE_SIZE):
                return
            page += 1

    # -- projects -------------------------------------------------------------------------------
    def health(self) -> bool:
        try:
            self._send("GET", "/health", auth=False)
            return True
        except LabelStudioApiError:
            return False

    def find_projects(self, key: str) -> list[dict[str, Any]]:
        """Projects carrying LabelLoop's marker for ``key``, oldest first."""
        marker = project_marker(key)
        found = [
            project
            for project in self._pages("/api/projects/", {}, "results")
            if marker in str(project.get("description") or "").splitlines()
        ]
        return sorted(found, key=lambda p: int(p["id"]))

    def ensure_project(
        self,
        key: str,
        *,
        title: str,
        labels: Sequence[str],
        model_version: str,
        overlap: int = 1,
        task_mode: str = "adjust",
    ) -> dict[str, Any]:
        """The project for ``key``: found, else created (once: a lost response is found by the lookup after).

        ``task_mode`` picks the labeling interface: boxes (``adjust``) or boxes plus a verdict (``verify``).
        """
        settings = {
            "label_config": label_config(labels, task_mode),
            "show_collab_predictions": True,
            "model_version": model_version,
            "maximum_annotations": overlap,
            "show_skip_button": True,
        }
        found = self.find_projects(key)
        if not found:
            description = f"Review of LabelLoop dataset images.\n{project_marker(key)}"
            try:
                self.post("/api/projects/", {"title": title[:50], "description": description, **settings})
            except LabelStudioApiError as exc:
                if exc.status is not None and exc.status < 500:
                    raise
            found = self.find_projects(key)
            if not found:
                raise LabelStudioApiError(
                    "POST", "/api/projects/", None, f"project for {key!r} not found after creation"
                )
            return found[0]
        project = found[0]
        stale = {k: v for k, v in settings.items() if project.get(k) != v}
        if stale:  # labels or model changed since the project was made
            project = self.patch(f"/api/projects/{project['id']}/", stale)
        return project

    def project_url(self, project_id: int) -> str:
        return f"{self.url}/projects/{project_id}/data"

    # -- storage and webhooks --------------------------------------------------------------------
    def ensure_s3_storage(
        self, project_id: int, bucket: str, *, access: S3Access, presign_ttl_minutes: int = 60
    ) -> dict[str, Any]:
        """An S3 source storage for ``bucket`` on the project (never synced: it only resolves s3:// URIs)."""
        for storage in self.get(f"/api/storages/s3/?project={project_id}") or []:
            if storage.get("bucket") == bucket:
                return dict(storage)
        payload: dict[str, Any] = {
            "project": project_id,
            "title": f"LabelLoop {bucket}"[:100],
            "bucket": bucket,
            "prefix": "",
            "use_blob_urls": False,
            "presign": True,
            "presign_ttl": presign_ttl_minutes,
            "recursive_scan": False,
        }
        if access.endpoint:
            payload["s3_endpoint"] = access.endpoint
        if access.region:
            payload["region_name"] = access.region
        if access.access_key_id and access.secret_access_key:
            payload["aws_access_key_id"] = access.access_key_id
            payload["aws_secret_access_key"] = access.secret_access_key
        return dict(self.post("/api/storages/s3/", payload))

    def ensure_webhook(self, project_id: int, url: str, headers: Mapping[str, str]) -> dict[str, Any]:
        """A project webhook to ``url`` for annotation events, with LabelLoop's shared-secret header."""
        for hook in self.get(f"/api/webhooks/?project={project_id}") or []:
            if hook.get("url") == url:
                if hook.get("headers") != dict(headers):
                    return dict(self.patch(f"/api/webhooks/{hook['id']}/", {"headers": dict(headers)}))
                return dict(hook)
        return dict(
            self.post(
                "/api/webhooks/",
                {
                    "project": project_id,
                    "url": url,
                    "send_payload": False,
                    "send_for_all_actions": False,
                    "headers": dict(headers),
                    "is_active": True,
                    "actions": ["ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED"],
                },
            )
        )

    # -- tasks ----------------------------------------------------------------------------------
    def batch_tasks(self, project_id: int, batch_id: str) -> list[dict[str, Any]]:
        """Every task of the batch (with annotations), found by the batch field LabelLoop put in data."""
        query = {
            "filters": {
                "conjunction": "and",
                "items": [
                    {
                        "filter": f"filter:tasks:data.{BATCH_FIELD}",
                        "operator": "equal",
                        "type": "String",
                        "value": batch_id,
                    }
                ],
            }
        }
        params = {"project": project_id, "fields": "all", "resolve_uri": "false", "query": json.dumps(query)}
        tasks = list(self._pages("/api/tasks/", params, "tasks"))
        # The filter is Label Studio's; the check is ours (a server ignoring it must not mix batches).
        return [t for t in tasks if (t.get("data") or {}).get(BATCH_FIELD) == batch_id]

    def import_tasks(self, project_id: int, batch_id: str, tasks: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """Import the tasks not there yet, then remove unanswered duplicates; returns counts.

        Idempotent: keys already present are skipped before importing, and a crash or lost
        response after an import is repaired by the next call (duplicates found by key, the
        oldest or the answered copy kept).
        """
        present = {str((t.get("data") or {}).get(KEY_FIELD)) for t in self.batch_tasks(project_id, batch_id)}
        missing = [t for t in tasks if t["data"][KEY_FIELD] not in present]
        for start in range(0, len(missing), IMPORT_CHUNK):
            chunk = list(missing[start : start + IMPORT_CHUNK])
            self.post(f"/api/projects/{project_id}/import?return_task_ids=true&commit_to_project=true", chunk)
        removed = self.remove_duplicates(project_id, batch_id)
        return {"imported": len(missing), "already_present": len(tasks) - len(missing), "duplicates_removed": removed}

    def remove_duplicates(self, project_id: int, batch_id: str) -> int:
        """Delete extra copies of a key that nobody has answered; returns how many were deleted."""
        by_key: dict[str, list[dict[str, Any]]] = {}
        for task in self.batch_tasks(project_id, batch_id):
            by_key.setdefault(str(task["data"].get(KEY_FIELD)), []).append(task)
        removed = 0
        for copies in by_key.values():
            if len(copies) < 2:
                continue
            copies.sort(key=lambda t: (-len(t.get("annotations") or []), int(t["id"])))
            for extra in copies[1:]:
                if not extra.get("annotations"):
                    self.delete(f"/api/tasks/{extra['id']}/")
                    removed += 1
        return removed

    def task(self, task_id: int) -> dict[str, Any]:
        return dict(self.get(f"/api/tasks/{task_id}/"))

    def annotate(self, task_id: int, result: list[dict[str, Any]], *, skip: bool = False) -> dict[str, Any]:
        """Submit an answer as an annotator would (``skip`` = the Skip button)."""
        payload: dict[str, Any] = {"result": result, "was_cancelled": skip}
        return dict(self.post(f"/api/tasks/{task_id}/annotations/", payload))

    def update_annotation(self, annotation_id: int, result: list[dict[str, Any]]) -> dict[str, Any]:
        """Edit a submitted answer (what "Update" in the UI does)."""
        return dict(self.patch(f"/api/annotations/{annotation_id}/", {"result": result}))
