"""`labelloop local up` as a library: the deployed stack served as an AWS endpoint on 127.0.0.1.

`serve` synthesizes the stack with the same context overrides as ``local run``, deploys it into the
in-process emulation (`sandbox.harness.LocalCloud`, SQS event sources polled in the background as
Lambda does) and serves moto's API over HTTP (`sandbox.server`), so whatever a client puts under
``incoming/<dataset>/`` starts batches exactly as on AWS. It returns when ``stop`` is set
(SIGINT/SIGTERM in the CLI): the endpoint stops accepting requests, running work gets a short
grace period to finish, what is still in flight is reported, ``--state`` is saved, and the
emulation is torn down.

Replay/oracle/answers files name images by a path under ``images_root``; at run time an image is
recognised by its content, wherever and under whatever key a client uploaded it.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from labelloop_core import contract
from sandbox.cloud_api import CloudApi
from sandbox.imagerefs import ImageRef
from sandbox.localrun import (
    ImageNames,
    LocalRunError,
    RunSpec,
    labels_for,
    parse_model,
    parse_reviewer,
    stack_context,
    synthesize_stack,
)
from sandbox.localrun.run import function_env
from sandbox.localrun.spec import LOCAL_WORKTEAM, REGION, check_options
from sandbox.localrun.wiring import build_predictor, build_workforce
from sandbox.localstate import StateDir, StateError
from sandbox.server import EndpointServer, PortInUseError, check_port

STACK_NAME = "LabelLoop"
#: Seconds a running batch gets to finish after a stop request before it is reported as in flight.
DEFAULT_DRAIN_S = 10.0
#: ``--state`` is saved this often while serving (incrementally: unchanged objects are not rewritten).
STATE_SAVE_EVERY_S = 30.0
#: Local credentials any client may use (the emulation accepts any; IAM is not enforced).
LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY = "labelloop-local", "labelloop-local"

Progress = Callable[[str], None]


class LocalUpError(ValueError):
    """A problem with ``local up``'s inputs or environment the user can fix (busy port, bad file)."""


@dataclass(frozen=True)
class UpSpec:
    """One ``local up``: the same `RunSpec` as ``local run`` (the shared options), served.

    Only the serving options are its own. ``run.images``/``run.out`` are replaced by the images root
    (``images_root``, or the folder of the replay/answers/oracle file, or the working directory).
    """

    run: RunSpec
    port: int
    images_root: Path | None = None
    state: Path | None = None
    drain_s: float = DEFAULT_DRAIN_S


@dataclass
class Endpoint:
    """What a running ``local up`` serves (printed by the CLI, handed to tests)."""

    url: str
    region: str
    bucket: str
    stack: str
    incoming_prefix: str
    exports_prefix: str
    labels: tuple[str, ...]
    restored_objects: int = 0


@dataclass
class StopReport:
    """How the server stopped: what finished during the grace period and what was still in flight."""

    drained: bool
    in_flight: list[str]
    saved_objects: int | None
    stop_s: float


# ------------------------------------------------------------------------- images by content


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


class RootNames(ImageNames):
    """Images under ``--images-root``, recognised by content wherever a client put them.

    Originals are matched by their bytes; a key (``incoming/<dataset>/...``) by the bytes of the
    object behind it; an EXIF-normalised copy (``<work>derived/<dataset>/...``) by the bytes of
    the original it was derived from.
    """

    def __init__(self, root: Path | None) -> None:
        files = [(p, p.relative_to(root).as_posix()) for p in sorted(root.rglob("*")) if p.is_file()] if root else []
        super().__init__([])  # this class keeps its own content index (every file is hashed once)
        self._known: dict[str, str] = {_sha(p.read_bytes()): rel for p, rel in files}
        self._by_key: dict[str, str | None] = {}
        self._learned: set[str] = set()
        self._incoming = contract.DEFAULT_INCOMING_PREFIX
        self._derived = contract.DEFAULT_WORK_PREFIX + contract.DERIVED_DIR
        self._client: Any = None
        self._bucket_name = ""
        self._mutex = threading.Lock()

    def attach_bucket(self, s3: Any, bucket: str, incoming_prefix: str, work_prefix: str) -> None:
        self._client, self._bucket_name = s3, bucket
        self._incoming, self._derived = incoming_prefix, work_prefix + contract.DERIVED_DIR

    def _original_key(self, key: str) -> str:
        """The uploaded object an emulated service's key stands for (a derived copy's original)."""
        if key.startswith(self._derived):
            return self._incoming + key[len(self._derived) :]
        return key

    def _relative_of_key(self, key: str) -> str | None:
        original = self._original_key(key)
        if original not in self._by_key:
            try:
                body = self._client.get_object(Bucket=self._bucket_name, Key=original)["Body"].read()
            except Exception:
                return None  # not (yet) an object: let the inner lookup try the key itself
            self._by_key[original] = self._known.get(_sha(body))
        return self._by_key[original]

    def _learn_derived_copies(self) -> None:
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket_name, Prefix=self._derived):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key in self._learned:
                    continue
                self._learned.add(key)
                relative = self._relative_of_key(key)
                if relative is not None:
                    body = self._client.get_object(Bucket=self._bucket_name, Key=key)["Body"].read()
                    self._known.setdefault(_sha(body), relative)

    def resolve(self, ref: ImageRef) -> str | None:
        if ref.data is not None and (found := self._known.get(_sha(ref.data))) is not None:
            return found
        if self._client is None:
            return None
        with self._mutex:
            if ref.key:
                for key in dict.fromkeys((ref.key, unquote_plus(ref.key))):
                    if key.startswith((self._incoming, self._derived)) and (rel := self._relative_of_key(key)):
                        return rel
            if ref.data is None:
                return None
            self._learn_derived_copies()
            return self._known.get(_sha(ref.data))


# ------------------------------------------------------------------------------- preparation


@dataclass
class Prepared:
    """The parsed options: labels, who answers for the model and the workforce, the run spec."""

    run_spec: RunSpec
    labels: tuple[str, ...]
    names: RootNames
    predictor: Any
    workforce: Any
    notes: list[str]


def _default_root(spec: UpSpec) -> tuple[Path, list[str]]:
    if spec.images_root is not None:
        if not spec.images_root.is_dir():
            raise LocalUpError(f"--images-root {spec.images_root}: not a folder")
        return spec.images_root, []
    for value in (spec.run.model, spec.run.reviewer):
        _, sep, name = value.partition(":")
        if sep and Path(name).is_file():
            folder = Path(name).expanduser().resolve().parent
            return folder, [f"images in {value} are looked up under {folder} (set --images-root to change)"]
    return Path.cwd(), []


def prepare(spec: UpSpec) -> Prepared:
    """Validate the options (as ``local run`` does) and build the model/workforce emulation; raises `LocalUpError`."""
    try:
        check_options(spec.run)
    except LocalRunError as exc:
        raise LocalUpError(str(exc)) from exc
    root, notes = _default_root(spec)
    run_spec = dataclasses.replace(spec.run, images=root, out=root)
    try:
        model = parse_model(run_spec.model, root)
        reviewer = parse_reviewer(run_spec.reviewer, root)
        labels = labels_for(run_spec, model, reviewer)
        stack_context(run_spec, labels)  # --context is validated now, not after a slow synthesis
        names = RootNames(root if (model.records or reviewer.records) else None)
        predictor = build_predictor(model, names, labels)
        workforce = build_workforce(reviewer, names, run_spec)
    except LocalRunError as exc:
        raise LocalUpError(str(exc)) from exc
    return Prepared(run_spec, labels, names, predictor, workforce, notes)


def _synthesize_job(run_spec: RunSpec, labels: tuple[str, ...], outdir: Path) -> Path:
    """Synthesize (or reuse from ``LABELLOOP_ASSEMBLY_CACHE``) the assembly of this configuration."""
    try:
        return synthesize_stack(run_spec, labels, outdir)
    except LocalRunError as exc:
        raise LocalUpError(str(exc)) from None


def _synthesize_child(conn: Any, run_spec: RunSpec, labels: tuple[str, ...], outdir: Path) -> None:
    try:
        conn.send(("ok", str(_synthesize_job(run_spec, labels, outdir))))
    except Exception as exc:
        conn.send(("error", str(exc)))


def _synthesize(prepared: Prepared, outdir: Path) -> Path:
    """`_synthesize_job` in a child process: the CDK's node kernel never runs in the serving process
    (which therefore exits at once instead of waiting for that kernel to shut down), and a stop
    request during synthesis ends the child instead of waiting for it."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_synthesize_child, args=(sender, prepared.run_spec, prepared.labels, outdir), daemon=True
    )
    child.start()
    sender.close()
    try:
        status, value = receiver.recv()
    except EOFError:
        child.join(5)
        raise LocalUpError(f"the synthesis process ended without an answer (exit code {child.exitcode})") from None
    except BaseException:
        child.terminate()
        child.join(5)
        raise
    child.join(30)
    if status != "ok":
        raise LocalUpError(value)
    return Path(value)


def pin_bucket_name(assembly: Path, stack: str, bucket: str, workdir: Path) -> Path:
    """A view of ``assembly`` whose data bucket is named ``bucket`` (a restart keeps the name).

    Every file is linked, only the stack template is rewritten; the cached assembly is not touched.
    """
    template = json.loads((assembly / f"{stack}.template.json").read_text())
    ref = template.get("Outputs", {}).get("DataBucketName", {}).get("Value", {})
    logical_id = ref.get("Ref") if isinstance(ref, dict) else None
    if logical_id not in template.get("Resources", {}):
        raise LocalUpError("the synthesized stack has no DataBucketName output naming its bucket")
    template["Resources"][logical_id].setdefault("Properties", {})["BucketName"] = bucket
    view = workdir / "assembly"
    view.mkdir(parents=True)
    for entry in assembly.iterdir():
        if entry.name != f"{stack}.template.json":
            (view / entry.name).symlink_to(entry.resolve())
    (view / f"{stack}.template.json").write_text(json.dumps(template))
    return view


# ------------------------------------------------------------------------------ in-flight work


def in_flight(cloud: CloudApi) -> list[str]:
    """Work the pipeline has not finished: running executions, queued events, open labeling jobs."""
    found: list[str] = []
    sfn = cloud.client("stepfunctions")
    for arn in cloud.state_machine_arns().values():
        kind = "export" if arn.endswith(contract.EXPORT_STATE_MACHINE_SUFFIX) else "workflow"
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=arn, statusFilter="RUNNING"):
            found += [f"{kind} execution {e['name']} running" for e in page["executions"]]
    sqs = cloud.client("sqs")
    for url in cloud.queue_urls().values():
        attrs = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        waiting = int(attrs.get("ApproximateNumberOfMessages", 0)) + int(
            attrs.get("ApproximateNumberOfMessagesNotVisible", 0)
        )
        name = url.rsplit("/", 1)[-1]
        if waiting and "dead" not in name.lower() and "dlq" not in name.lower():
            found.append(f"{waiting} message(s) queued in {name}")
    for job in cloud.labeling_jobs().values():
        if job.status in ("InProgress", "Stopping"):
            found.append(f"labeling job {job.name} {job.status}")
    return found


def _drain(cloud: CloudApi, seconds: float) -> list[str]:
    """Let running work finish for up to ``seconds``; return what is still in flight."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            pending = in_flight(cloud)
        except Exception as exc:  # the report must not prevent the stop
            return [f"(could not list in-flight work: {exc})"]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.25)


# ----------------------------------------------------------------------------------- serving


def serve(
    spec: UpSpec,
    stop: threading.Event,
    progress: Progress,
    on_ready: Callable[[Endpoint], None],
) -> StopReport | None:
    """Serve until ``stop`` is set; see the module doc. None when stopped before serving."""
    from sandbox.harness import LocalCloud

    try:
        check_port(spec.port)
    except PortInUseError as exc:
        raise LocalUpError(str(exc)) from None
    state = _state_dir(spec.state)
    saved = state.saved() if state is not None else None
    prepared = prepare(spec)
    for note in prepared.notes:
        progress(note)
    with tempfile.TemporaryDirectory(prefix="labelloop-up-") as tmp:
        progress(f"synthesizing the stack (labels {', '.join(prepared.labels)}; model {spec.run.model})")
        assembly = _synthesize(prepared, Path(tmp) / "cdk.out")
        if saved is not None:
            assembly = pin_bucket_name(assembly, STACK_NAME, saved.bucket, Path(tmp))
        if stop.is_set():
            return None
        started = time.monotonic()
        with LocalCloud.start(
            assembly,
            workforce=prepared.workforce,
            predictor=prepared.predictor,
            labels=prepared.labels,
            workteams=[LOCAL_WORKTEAM],
            region=REGION,
            stack_name=STACK_NAME,
        ) as cloud:
            progress(f"deployed into the emulation ({time.monotonic() - started:.1f}s)")
            return _serve_deployed(spec, cloud, prepared, state, stop, progress, on_ready)


def _state_dir(path: Path | None) -> StateDir | None:
    if path is None:
        return None
    try:
        return StateDir(path)
    except StateError as exc:
        raise LocalUpError(str(exc)) from None


def _serve_deployed(
    spec: UpSpec,
    cloud: CloudApi,
    prepared: Prepared,
    state: StateDir | None,
    stop: threading.Event,
    progress: Progress,
    on_ready: Callable[[Endpoint], None],
) -> StopReport | None:
    env = function_env(cloud)
    prepared.names.attach_bucket(
        cloud.client("s3"),
        cloud.bucket,
        cloud.incoming_prefix,
        env.get(contract.Env.WORK_PREFIX, contract.DEFAULT_WORK_PREFIX),
    )
    restored = 0
    if state is not None:
        try:
            restored = state.restore(cloud.client("s3"), cloud.bucket, cloud.deployment.account)
        except StateError as exc:
            raise LocalUpError(str(exc)) from None
    try:
        server = EndpointServer(spec.port)
    except PortInUseError as exc:
        raise LocalUpError(str(exc)) from None
    server.start()
    endpoint = Endpoint(
        url=server.url,
        region=cloud.region,
        bucket=cloud.bucket,
        stack=STACK_NAME,
        incoming_prefix=cloud.incoming_prefix,
        exports_prefix=cloud.outputs.get("ExportsPrefix", contract.DEFAULT_EXPORTS_PREFIX),
        labels=prepared.labels,
        restored_objects=restored,
    )
    try:
        on_ready(endpoint)
        last_save = time.monotonic()
        while not stop.wait(0.5):
            if state is not None and time.monotonic() - last_save >= STATE_SAVE_EVERY_S:
                # A crash (SIGKILL, power) then loses at most this much; a clean stop saves again.
                state.save(cloud.client("s3"), cloud.bucket, STACK_NAME)
                last_save = time.monotonic()
    finally:
        server.stop()
    began = time.monotonic()
    progress(f"stopping: endpoint closed; giving running work up to {spec.drain_s:.0f}s to finish")
    pending = _drain(cloud, spec.drain_s)
    saved_objects = None
    if state is not None:
        saved_objects = state.save(cloud.client("s3"), cloud.bucket, STACK_NAME)
        progress(f"saved {saved_objects} object(s) of s3://{cloud.bucket} to {state.root}")
    return StopReport(not pending, pending, saved_objects, time.monotonic() - began)


def copy_command(endpoint: Endpoint, folder: str = "DIR", dataset: str = "DATASET") -> str:
    """The AWS CLI line that uploads a folder as a dataset to this endpoint."""
    return (
        f"aws --endpoint-url {endpoint.url} --region {endpoint.region} s3 cp {folder} "
        f"s3://{endpoint.bucket}/{endpoint.incoming_prefix}{dataset}/ --recursive"
    )


def banner_lines(endpoint: Endpoint, extra: Iterable[str] = ()) -> list[str]:
    """What ``local up`` prints once it serves."""
    lines = [
        f"LabelLoop is up at {endpoint.url} (region {endpoint.region}, stack {endpoint.stack})",
        f"  data bucket: {endpoint.bucket}",
        f"  labels: {', '.join(endpoint.labels)}",
    ]
    if endpoint.restored_objects:
        lines.append(f"  restored {endpoint.restored_objects} object(s) from --state")
    lines += [
        *extra,
        "  any credentials work; e.g.",
        f"    export AWS_ACCESS_KEY_ID={LOCAL_ACCESS_KEY} AWS_SECRET_ACCESS_KEY={LOCAL_SECRET_KEY}",
        f"    {copy_command(endpoint)}",
        f"    labelloop status --endpoint-url {endpoint.url}",
        f"    labelloop pull DATASET --out OUT --endpoint-url {endpoint.url}",
        "  Ctrl-C (or SIGTERM) stops it.",
    ]
    return lines
