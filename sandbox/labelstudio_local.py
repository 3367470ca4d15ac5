"""`labelloop local run --review-backend labelstudio`: the emulated cloud beside a real Label Studio server.

The deployed Lambdas talk to the Label Studio server at ``--labelstudio-url`` exactly as in AWS;
around them this module plays what the emulation lacks:

- the token: read from ``LABEL_STUDIO_API_KEY`` (never a flag, never printed) and stored in the
  emulated Secrets Manager under the ARN the stack is synthesized with;
- the bucket as Label Studio sees it: the emulated S3 is also served on a loopback port, and the
  secret tells Label Studio's S3 storage to use that endpoint, so images load in the browser;
- the schedule: EventBridge schedules never fire in the emulation, so the deployed reconcile
  function is invoked with ``{"action": "sweep"}`` every couple of seconds while the run waits;
- the reviewers: ``--reviewer human`` prints each project's URL and waits for people;
  ``accept``/``answers:FILE``/``oracle:FILE`` answer each task through Label Studio's API as an
  annotator would (one annotator: ``--workers 1``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from labelloop_core import contract
from labelloop_core.boxes import Box
from labelloop_core.contract import META_KEY, REVIEW_MANIFEST
from labelloop_core.labelstudio import KEY_FIELD, boxes_from_result, region_from_box
from labelloop_core.labelstudio_verify import verify_result
from sandbox.cloud_api import CloudApi
from sandbox.imagerefs import ImageRef
from sandbox.product_seam import LabelStudioApiError, LabelStudioClient
from sandbox.workforce import Task, Workforce

T = TypeVar("T")
TOKEN_ENV = "LABEL_STUDIO_API_KEY"
SECRET_NAME = "labelloop-local/label-studio-token"
#: Seconds between two reconcile sweeps / answer rounds while the run waits.
TICK_SECONDS = 2.0


class LabelStudioLocalError(ValueError):
    """Label Studio cannot be used for this run; the message says what to fix."""


def token_from_env() -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise LabelStudioLocalError(
            f"--review-backend labelstudio needs the Label Studio API token in the {TOKEN_ENV} environment "
            "variable (Account & Settings in Label Studio; never pass it as a flag)"
        )
    return token


def secret_arn(region: str, account: str) -> str:
    """The (partial) ARN the stack is synthesized with; the secret is created under this name after deploy."""
    return f"arn:aws:secretsmanager:{region}:{account}:secret:{SECRET_NAME}"


def check_server(url: str, token: str) -> None:
    """Fail early, with a clear message, when the server is unreachable or refuses the token."""
    try:
        LabelStudioClient(url, token, attempts=2, timeout=10).get("/api/current-user/whoami")
    except ValueError as exc:
        raise LabelStudioLocalError(f"--labelstudio-url: {exc}") from None
    except LabelStudioApiError as exc:
        if exc.status in (401, 403):
            raise LabelStudioLocalError(
                f"Label Studio at {url} refused the token in {TOKEN_ENV} ({exc.status}); use the legacy token "
                "(LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN) or a personal access token"
            ) from None
        raise LabelStudioLocalError(f"Label Studio at {url} is not usable: {exc}") from None


@dataclass
class LocalLabelStudio:
    """The run's Label Studio side (see the module doc); use as a context manager around the run."""

    cloud: CloudApi
    url: str
    token: str
    dataset: str
    work_prefix: str
    workforce: Workforce | None  # None = people review in the UI
    labels: tuple[str, ...]
    say: Callable[[str], None]
    region: str = "us-east-1"
    _server: Any = None
    _sync_function: str | None = None
    _last_tick: float = 0.0
    _announced: set[tuple[int, str]] = field(default_factory=set)
    _answered: set[int] = field(default_factory=set)
    _unanswerable: set[int] = field(default_factory=set)

    def __enter__(self) -> LocalLabelStudio:
        from moto.server import ThreadedMotoServer

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        endpoint = f"http://127.0.0.1:{port}"
        secret = {
            "token": self.token,
            # Any key works against the emulation; in AWS leave "s3" out and give Label Studio a role.
            "s3": {"endpoint": endpoint, "region": self.region, "accessKeyId": "local", "secretAccessKey": "local"},
        }
        self.cloud.client("secretsmanager").create_secret(Name=SECRET_NAME, SecretString=json.dumps(secret))
        names = [name for logical, name in self.cloud.function_names().items() if "ReviewSync" in logical]
        self._sync_function = names[0] if names else None
        if self._sync_function is None:
            self.close()
            raise LabelStudioLocalError("the deployed stack has no Label Studio review sync function")
        self.say(f"emulated S3 served to Label Studio at {endpoint}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    # -- ticking --------------------------------------------------------------------------------
    def tick(self) -> None:
        """Answer what can be answered, then reconcile (at most every `TICK_SECONDS`)."""
        now = time.monotonic()
        if now - self._last_tick < TICK_SECONDS:
            return
        self._last_tick = now
        for state_key in self.cloud.list_keys(f"{self.work_prefix}{contract.BATCHES_DIR}{self.dataset}/"):
            name = state_key.rsplit("/", 1)[-1]
            if contract.is_labelstudio_state_file(name):  # one per review (stage)
                self._review(state_key)
        self.sweep()

    def sweep(self) -> None:
        if self._sync_function is None:
            return
        response = self.cloud.client("lambda").invoke(
            FunctionName=self._sync_function, Payload=json.dumps({"action": "sweep"}).encode()
        )
        if response.get("FunctionError"):
            self.say(f"review sync failed: {response['Payload'].read().decode()[:300]}")

    def _client(self) -> LabelStudioClient:
        return LabelStudioClient(self.url, self.token)

    def _review(self, state_key: str) -> None:
        body = self.cloud.client("s3").get_object(Bucket=self.cloud.bucket, Key=state_key)["Body"].read()
        state = json.loads(body)
        project_id = int(state["project_id"])
        verify = state.get("task_mode") == "verify"
        announced = (project_id, str(state.get("job_name")))
        if announced not in self._announced:
            self._announced.add(announced)
            who = "waiting for people to review" if self.workforce is None else "answering through the API"
            what = "verify task(s): correct/incorrect" if verify else "task(s)"
            self.say(f"Label Studio project {state.get('project_url')} ({state.get('tasks')} {what}); {who}")
        if self.workforce is None:
            return
        batch_prefix = state_key.rsplit("/", 1)[0] + "/"
        batch_id = batch_prefix.rstrip("/").rsplit("/", 1)[-1]
        sizes = self._sizes(batch_prefix)
        ls = self._client()
        for task in ls.batch_tasks(project_id, batch_id):
            task_id = int(task["id"])
            if task.get("annotations") or task_id in self._answered or task_id in self._unanswerable:
                continue
            self._answer(ls, task, sizes, verify=verify)

    def _sizes(self, batch_prefix: str) -> dict[str, tuple[int, int]]:
        body = self.cloud.client("s3").get_object(Bucket=self.cloud.bucket, Key=f"{batch_prefix}{REVIEW_MANIFEST}")
        sizes = {}
        for raw in body["Body"].read().decode().splitlines():
            if raw.strip():
                meta = json.loads(raw).get(META_KEY) or {}
                sizes[str(meta.get("key"))] = (int(meta.get("width") or 0), int(meta.get("height") or 0))
        return sizes

    def _answer(
        self, ls: LabelStudioClient, task: dict[str, Any], sizes: dict[str, tuple[int, int]], *, verify: bool = False
    ) -> None:
        """Answer one task as an annotator in the UI would: draw boxes, or judge the predicted ones."""
        assert self.workforce is not None
        data = task["data"]
        key = str(data[KEY_FIELD]).split("/", 1)[1]
        width, height = sizes.get(key, (0, 0))
        shown: list[Box] = []
        predicted: list[dict[str, Any]] = []
        for prediction in task.get("predictions") or []:
            predicted = list(prediction.get("result") or [])
            shown, _ = boxes_from_result(predicted, self.labels, width, height)
        bucket, _, object_key = str(data["image"])[len("s3://") :].partition("/")
        offered = Task(
            job_name=str(data.get("labelloop_batch")),
            dataset_object_id=str(task["id"]),
            data_object={"source-ref": data["image"], META_KEY: {"key": key}},
            task_input={"initialValue": [_pixel(b) for b in shown], **({"mode": "verify"} if verify else {})},
            image=ImageRef(bucket=bucket, key=object_key),
            image_width=width,
            image_height=height,
            labels=list(self.labels),
            workers=1,
        )
        answers = self.workforce.answer(offered)
        if not answers:
            self._unanswerable.add(int(task["id"]))
            self.say(f"no answer for {key}: its task waits for a person in Label Studio")
            return
        if verify:  # the UI pre-fills the predicted boxes; the reviewer picks a verdict
            shown_regions = [{k: v for k, v in r.items() if k != "score"} for r in predicted]
            regions = verify_result(str(answers[0].verdict), answers[0].comment, shown_regions)
        else:
            regions = [
                region_from_box(Box(b["label"], b["left"], b["top"], b["width"], b["height"]), width, height, f"a{i}")
                for i, b in enumerate(answers[0].boxes)
            ]
        ls.annotate(int(task["id"]), regions)
        self._answered.add(int(task["id"]))


def run_with_label_studio(
    cloud: CloudApi,
    url: str,
    token: str,
    *,
    dataset: str,
    work_prefix: str,
    workforce: Workforce | None,
    labels: tuple[str, ...],
    say: Callable[[str], None],
    region: str,
    run: Callable[[Callable[[], None]], T],
) -> T:
    """``run(tick)`` with Label Studio set up around it; ``tick`` is called on every poll of the run."""
    with LocalLabelStudio(
        cloud=cloud,
        url=url,
        token=token,
        dataset=dataset,
        work_prefix=work_prefix,
        workforce=workforce,
        labels=labels,
        say=say,
        region=region,
    ) as label_studio:
        return run(label_studio.tick)


def _pixel(box: Box) -> dict[str, Any]:
    return {"label": box.label, "left": box.left, "top": box.top, "width": box.width, "height": box.height}
