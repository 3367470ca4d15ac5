"""Ground Truth emulator behind the real SageMaker API (moto 5.2.5 has no labeling jobs).

``install()`` adds CreateLabelingJob, DescribeLabelingJob, ListLabelingJobs, StopLabelingJob,
CreateWorkteam, DescribeWorkteam and ListWorkteams to moto's SageMaker response class, so
``boto3.client("sagemaker").create_labeling_job(...)`` works inside ``mock_aws``. Requests are
validated against the botocore service model (types, required members, lengths, patterns, enums).

The job runtime follows the documented custom-workflow contract (docs/contracts.md, docs/emulation.md):
1. read the input manifest (and the label category file);
2. invoke the pre-annotation Lambda per line with ``{"version","labelingJobArn","dataObject"}``;
   objects answered with ``isHumanAnnotationRequired: false`` are skipped — not shown to workers,
   not sent to the post-annotation Lambda, written to the output manifest unchanged and counted
   as ``Unlabeled`` (our reading of "the object is not sent to workers");
3. collect worker answers from the configured workforce (``sandbox.workforce``); objects nobody
   answered are not sent to the post-annotation Lambda either;
4. write worker responses and the consolidation request (the payload file) under
   ``<S3OutputPath>/<job>/annotations/``, invoke the post-annotation Lambda with
   ``{"version","labelingJobArn","labelCategories","labelAttributeName","roleArn","payload"}``;
5. write ``<S3OutputPath>/<job>/manifests/output/output.manifest``: each input line plus the
   consolidated content; ``<attr>-metadata`` gets the custom-workflow keys Ground Truth adds
   (``"type": "groundTruth/custom"``, ``job_name``, ``creation_date``, ``human-annotated``);
6. set the final status, label counters and output URI, and put the "SageMaker Ground Truth
   Labeling Job State Change" event on the default bus (optionally twice: SageMaker may repeat it).

Any Lambda error, unreadable input or workforce failure ends the job ``Failed`` with a
``FailureReason``; StopLabelingJob, or reaching a ``StoppingConditions`` limit, ends it ``Stopped``
(objects done so far are still written).
Jobs run on a background thread after CreateLabelingJob returns, so a caller that records a Step
Functions task token *after* creating the job still sees the completion event; ``mode="manual"``
leaves jobs ``InProgress`` until ``advance()`` is called (deterministic tests).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.session
from botocore.model import OperationModel, Shape
from botocore.validate import ParamValidator
from moto.sagemaker.exceptions import ResourceInUseException, ResourceNotFound, ValidationError
from moto.sagemaker.models import sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse

from sandbox.imagerefs import ImageRef, image_size, parse_s3_uri
from sandbox.workforce import AcceptPrelabels, Task, Workforce, WorkforceFailure, answer_content

EVENT_DETAIL_TYPE = "SageMaker Ground Truth Labeling Job State Change"
TERMINAL = ("Completed", "Failed", "Stopped")
PUBLIC_WORKTEAM_ACCOUNT = "394669845002"
_ELEMENT_NAME = re.compile(r"<crowd-bounding-box\b[^>]*?\bname\s*=\s*[\"']([^\"']+)[\"']", re.S)


@dataclass
class Settings:
    """How the emulated Ground Truth behaves; the harness sets these per LocalCloud."""

    workforce: Workforce = field(default_factory=AcceptPrelabels)
    mode: str = "thread"  # "thread": run after create returns; "manual": wait for advance()
    start_delay_s: float = 0.05
    duplicate_events: bool = False


SETTINGS = Settings()
_PATCH_STATE: dict[str, Any] = {}
_THREADS: list[threading.Thread] = []
_THREADS_LOCK = threading.Lock()


@dataclass
class LabelingJob:
    """One emulated labeling job (request echo plus runtime state)."""

    request: dict[str, Any]
    arn: str
    account: str
    region: str
    status: str = "InProgress"
    failure_reason: str | None = None
    counters: dict[str, int] = field(
        default_factory=lambda: {
            "TotalLabeled": 0,
            "HumanLabeled": 0,
            "MachineLabeled": 0,
            "FailedNonRetryableError": 0,
            "Unlabeled": 0,
        }
    )
    output_uri: str | None = None
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    stop_requested: bool = False
    running: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    log: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.request["LabelingJobName"])

    def describe(self) -> dict[str, Any]:
        out = copy.deepcopy(self.request)
        out.update(
            {
                "LabelingJobArn": self.arn,
                "LabelingJobStatus": self.status,
                "LabelCounters": dict(self.counters),
                "CreationTime": self.created,
                "LastModifiedTime": self.modified,
                "JobReferenceCode": self.arn.rsplit("/", 1)[-1][:32] or "local",
            }
        )
        if self.failure_reason:
            out["FailureReason"] = self.failure_reason
        if self.output_uri:
            out["LabelingJobOutput"] = {"OutputDatasetS3Uri": self.output_uri}
        return out

    def summary(self) -> dict[str, Any]:
        hc = self.request["HumanTaskConfig"]
        out: dict[str, Any] = {
            "LabelingJobName": self.name,
            "LabelingJobArn": self.arn,
            "CreationTime": self.created,
            "LastModifiedTime": self.modified,
            "LabelingJobStatus": self.status,
            "LabelCounters": dict(self.counters),
            "WorkteamArn": hc["WorkteamArn"],
            "InputConfig": copy.deepcopy(self.request["InputConfig"]),
        }
        if hc.get("PreHumanTaskLambdaArn"):
            out["PreHumanTaskLambdaArn"] = hc["PreHumanTaskLambdaArn"]
        consolidation = hc.get("AnnotationConsolidationConfig", {}).get("AnnotationConsolidationLambdaArn")
        if consolidation:
            out["AnnotationConsolidationLambdaArn"] = consolidation
        if self.failure_reason:
            out["FailureReason"] = self.failure_reason
        if self.output_uri:
            out["LabelingJobOutput"] = {"OutputDatasetS3Uri": self.output_uri}
        return out


@dataclass
class GroundTruthState:
    """Jobs and workteams of one account/region, stored on moto's SageMaker backend (reset with it)."""

    jobs: dict[str, LabelingJob] = field(default_factory=dict)  # keyed by lower-cased name
    workteams: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def state_for(account: str, region: str) -> GroundTruthState:
    backend = sagemaker_backends[account][region]
    state = backend.__dict__.get("_labelloop_groundtruth")
    if state is None:
        state = backend.__dict__.setdefault("_labelloop_groundtruth", GroundTruthState())
    return state


# ---------------------------------------------------------------- request validation

_MODEL: Any = None


def _operation(name: str) -> OperationModel:
    global _MODEL
    if _MODEL is None:
        _MODEL = botocore.session.get_session().get_service_model("sagemaker")
    return _MODEL.operation_model(name)


def _violation(value: Any, path: str, constraint: str) -> str:
    shown = "" if isinstance(value, list | dict) else f" '{value}'"
    return f"Value{shown} at '{path}' failed to satisfy constraint: Member must {constraint}"


def _constraint_errors(shape: Shape, value: Any, path: str) -> list[str]:
    """Length, range, pattern and enum checks botocore's ParamValidator does not do."""
    errors: list[str] = []
    meta = shape.metadata
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                errors += _constraint_errors(member, value[name], f"{path}.{name[0].lower()}{name[1:]}")
    elif shape.type_name == "list" and isinstance(value, list):
        for index, item in enumerate(value):
            errors += _constraint_errors(shape.member, item, f"{path}.{index + 1}.member")
        if "max" in meta and len(value) > meta["max"]:
            errors.append(_violation(value, path, f"have length less than or equal to {meta['max']}"))
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            errors += _constraint_errors(shape.value, item, f"{path}.{key}")
    elif shape.type_name == "string" and isinstance(value, str):
        if "min" in meta and len(value) < meta["min"]:
            errors.append(_violation(value, path, f"have length greater than or equal to {meta['min']}"))
        if "max" in meta and len(value) > meta["max"]:
            errors.append(_violation(value, path, f"have length less than or equal to {meta['max']}"))
        pattern = meta.get("pattern")
        if pattern:
            try:
                compiled = re.compile(pattern)
            except re.error:
                compiled = None  # a Java-only construct: AWS checks it, we cannot
            if compiled is not None and not compiled.fullmatch(value):
                errors.append(_violation(value, path, f"satisfy regular expression pattern: {pattern}"))
        if shape.enum and value not in shape.enum:
            errors.append(_violation(value, path, f"satisfy enum value set: {shape.enum}"))
    elif shape.type_name in ("integer", "long") and isinstance(value, int):
        if "min" in meta and value < meta["min"]:
            errors.append(_violation(value, path, f"have value greater than or equal to {meta['min']}"))
        if "max" in meta and value > meta["max"]:
            errors.append(_violation(value, path, f"have value less than or equal to {meta['max']}"))
    return errors


def validate_request(operation: str, params: dict[str, Any]) -> None:
    """Reject a request AWS would reject, with AWS's ValidationException wording."""
    shape = _operation(operation).input_shape
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise ValidationError(report.generate_report())
    errors: list[str] = []
    for name, member in shape.members.items():
        if name in params:
            errors += _constraint_errors(member, params[name], f"{name[0].lower()}{name[1:]}")
    if errors:
        count = len(errors)
        raise ValidationError(f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(errors))


def _params(response: SageMakerResponse) -> dict[str, Any]:
    params = response.params
    if hasattr(params, "original_dict"):
        params = params.original_dict()
    return dict(params or {})


# ---------------------------------------------------------------- API operations


def _region_account(response: SageMakerResponse) -> tuple[str, str]:
    return response.current_account, response.region


def create_labeling_job(response: SageMakerResponse) -> Any:
    from moto.core.responses import ActionResult

    params = _params(response)
    validate_request("CreateLabelingJob", params)
    account, region = _region_account(response)
    state = state_for(account, region)
    _check_semantics(params, account, region, state)
    name = params["LabelingJobName"]
    arn = f"arn:aws:sagemaker:{region}:{account}:labeling-job/{name.lower()}"
    with state.lock:
        if name.lower() in state.jobs:  # names are unique regardless of case (the ARN is lower case)
            raise ResourceInUseException(f"A labeling job with name {name} already exists.")
        job = LabelingJob(request=params, arn=arn, account=account, region=region)
        state.jobs[name.lower()] = job
    if SETTINGS.mode == "thread":
        _start_thread(job)
    return ActionResult({"LabelingJobArn": arn})


def _check_semantics(params: dict[str, Any], account: str, region: str, state: GroundTruthState) -> None:
    """Rules the service enforces beyond the model: S3 URIs, known workteam, worker count."""
    manifest = params["InputConfig"]["DataSource"].get("S3DataSource", {}).get("ManifestS3Uri")
    if not manifest:
        raise ValidationError(
            "InputConfig.DataSource.S3DataSource.ManifestS3Uri is required (SNS streaming is not emulated)"
        )
    for label, uri in (
        ("ManifestS3Uri", manifest),
        ("S3OutputPath", params["OutputConfig"]["S3OutputPath"]),
    ):
        if not uri.startswith("s3://"):
            raise ValidationError(f"{label} must be an s3:// URI, got {uri!r}")
    hc = params["HumanTaskConfig"]
    team = hc["WorkteamArn"]
    team_account = team.split(":")[4] if team.count(":") >= 5 else ""
    if team_account != PUBLIC_WORKTEAM_ACCOUNT:
        known = {t["WorkteamArn"] for t in state.workteams.values()}
        if team not in known:
            raise ValidationError(f"Workteam {team} does not exist in this account and region.")
    if not hc.get("UiConfig", {}).get("UiTemplateS3Uri") and not hc.get("UiConfig", {}).get("HumanTaskUiArn"):
        raise ValidationError("HumanTaskConfig.UiConfig needs UiTemplateS3Uri or HumanTaskUiArn")
    if not hc.get("AnnotationConsolidationConfig", {}).get("AnnotationConsolidationLambdaArn"):
        raise ValidationError(
            "HumanTaskConfig.AnnotationConsolidationConfig.AnnotationConsolidationLambdaArn is required"
        )


def describe_labeling_job(response: SageMakerResponse) -> Any:
    from moto.core.responses import ActionResult

    params = _params(response)
    validate_request("DescribeLabelingJob", params)
    job = _get_job(response, params["LabelingJobName"])
    with job.lock:
        return ActionResult(job.describe())


def _get_job(response: SageMakerResponse, name: str) -> LabelingJob:
    state = state_for(*_region_account(response))
    job = state.jobs.get(name.lower())  # the name as given or as read back from the ARN
    if job is None:
        raise ResourceNotFound(f"Could not find labeling job {name!r}.")
    return job


def list_labeling_jobs(response: SageMakerResponse) -> Any:
    from moto.core.responses import ActionResult

    params = _params(response)
    validate_request("ListLabelingJobs", params)
    state = state_for(*_region_account(response))
    jobs = list(state.jobs.values())
    if params.get("NameContains"):
        jobs = [j for j in jobs if params["NameContains"].lower() in j.name.lower()]
    if params.get("StatusEquals"):
        jobs = [j for j in jobs if j.status == params["StatusEquals"]]
    for key, attr, after in (
        ("CreationTimeAfter", "created", True),
        ("CreationTimeBefore", "created", False),
        ("LastModifiedTimeAfter", "modified", True),
        ("LastModifiedTimeBefore", "modified", False),
    ):
        if params.get(key):
            bound = params[key]
            bound = bound if bound.tzinfo else bound.replace(tzinfo=UTC)
            jobs = [j for j in jobs if (getattr(j, attr) > bound) == after]
    sort_by = params.get("SortBy", "CreationTime")
    key_fn: Callable[[LabelingJob], Any] = {
        "Name": lambda j: j.name,
        "CreationTime": lambda j: j.created,
        "Status": lambda j: j.status,
    }[sort_by]
    jobs.sort(key=key_fn, reverse=params.get("SortOrder", "Descending") == "Descending")
    start = int(params.get("NextToken") or 0)
    limit = int(params.get("MaxResults") or 10)
    page = jobs[start : start + limit]
    result: dict[str, Any] = {"LabelingJobSummaryList": [j.summary() for j in page]}
    if start + limit < len(jobs):
        result["NextToken"] = str(start + limit)
    return ActionResult(result)


def stop_labeling_job(response: SageMakerResponse) -> Any:
    from moto.core.responses import EmptyResult

    params = _params(response)
    validate_request("StopLabelingJob", params)
    job = _get_job(response, params["LabelingJobName"])
    with job.lock:
        if job.status in TERMINAL:
            return EmptyResult()  # stopping a finished job is a no-op, as on AWS
        job.stop_requested = True
        job.status = "Stopping"
        job.modified = datetime.now(UTC)
    if SETTINGS.mode == "manual":
        run_job(job)  # nothing is running it: finish the stop now
    return EmptyResult()


def create_workteam(response: SageMakerResponse) -> Any:
    from moto.core.responses import ActionResult

    params = _params(response)
    validate_request("CreateWorkteam", params)
    account, region = _region_account(response)
    state = state_for(account, region)
    name = params["WorkteamName"]
    with state.lock:
        if name in state.workteams:
            raise ResourceInUseException(f"Workteam {name} already exists.")
        now = datetime.now(UTC)
        team = {
            "WorkteamName": name,
            "MemberDefinitions": params["MemberDefinitions"],
            "WorkteamArn": f"arn:aws:sagemaker:{region}:{account}:workteam/private-crowd/{name}",
            "WorkforceArn": f"arn:aws:sagemaker:{region}:{account}:workforce/{params.get('WorkforceName', 'default')}",
            "Description": params["Description"],
            "SubDomain": f"{name.lower()}.labeling.{region}.sagemaker.aws",
            "CreateDate": now,
            "LastUpdatedDate": now,
        }
        if params.get("NotificationConfiguration"):
            team["NotificationConfiguration"] = params["NotificationConfiguration"]
        state.workteams[name] = team
    return ActionResult({"WorkteamArn": team["WorkteamArn"]})


def describe_workteam(response: SageMakerResponse) -> Any:
    from moto.core.responses import ActionResult

    params = _params(response)
    validate_request("DescribeWorkteam", params)
    state = state_for(*_region_account(response))
    team = state.workteams.get(params["WorkteamName"])
    if team is None:
        raise ResourceNotFound(f"Workteam {params['WorkteamName']!r} does not exist.")
    return ActionResult({"Workteam": copy.deepcopy(team)})


def list_workteams(response: SageMakerResponse) -> Any:
    from moto.core.responses import ActionResult

    params = _params(response)
    validate_request("ListWorkteams", params)
    state = state_for(*_region_account(response))
    teams = [t for t in state.workteams.values() if params.get("NameContains", "") in t["WorkteamName"]]
    return ActionResult({"Workteams": copy.deepcopy(teams)})


OPERATIONS: dict[str, Callable[[SageMakerResponse], Any]] = {
    "create_labeling_job": create_labeling_job,
    "describe_labeling_job": describe_labeling_job,
    "list_labeling_jobs": list_labeling_jobs,
    "stop_labeling_job": stop_labeling_job,
    "create_workteam": create_workteam,
    "describe_workteam": describe_workteam,
    "list_workteams": list_workteams,
}


def install(settings: Settings | None = None) -> None:
    """Add the labeling-job and workteam operations to moto's SageMaker dispatch (idempotent)."""
    global SETTINGS
    if settings is not None:
        SETTINGS = settings
    if _PATCH_STATE:
        return
    for method, func in OPERATIONS.items():
        _PATCH_STATE[method] = SageMakerResponse.__dict__.get(method)
        setattr(SageMakerResponse, method, func)


def uninstall() -> None:
    """Remove the operations again (restoring any moto implementation they shadowed)."""
    for method, original in list(_PATCH_STATE.items()):
        if original is None:
            delattr(SageMakerResponse, method)
        else:
            setattr(SageMakerResponse, method, original)
        del _PATCH_STATE[method]


# ---------------------------------------------------------------- job runtime


def _start_thread(job: LabelingJob) -> None:
    def target() -> None:
        time.sleep(SETTINGS.start_delay_s)
        run_job(job)

    thread = threading.Thread(target=target, name=f"groundtruth-{job.name}", daemon=True)
    with _THREADS_LOCK:
        _THREADS.append(thread)
    thread.start()


def join_threads(timeout: float = 120.0) -> None:
    """Wait for every background job thread (the harness calls this before leaving the mock).

    Jobs started while waiting (a workflow step still finishing creates one) are waited for too:
    a job thread that outlived its emulation would emit its events into the next one's backends.
    The generous timeout only costs time when a job hangs; a loaded machine is merely slow.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        with _THREADS_LOCK:
            threads = list(_THREADS)
            _THREADS.clear()
        if not threads:
            return
        for thread in threads:
            thread.join(max(0.0, deadline - time.time()))


def advance(account: str = "123456789012", region: str = "us-east-1", name: str | None = None) -> list[str]:
    """Run every pending job (or the named one) to its end now; return the names run."""
    state = state_for(account, region)
    with state.lock:
        pending = [j for j in state.jobs.values() if j.status in ("InProgress", "Stopping")]
    ran = []
    for job in pending:
        if name is None or job.name == name:
            run_job(job)
            ran.append(job.name)
    return ran


class JobFailure(Exception):
    """Ends a job Failed with this message as FailureReason."""


class _Runtime:
    """Runs one job: Lambdas via moto's Lambda (in-process), files via moto's S3."""

    def __init__(self, job: LabelingJob) -> None:
        self.job = job
        self.s3 = boto3.client("s3", region_name=job.region)
        self.lam = boto3.client("lambda", region_name=job.region)
        self.hc = job.request["HumanTaskConfig"]
        self.attr = job.request["LabelAttributeName"]
        out_bucket, out_prefix = parse_s3_uri(job.request["OutputConfig"]["S3OutputPath"].rstrip("/") + "/x")
        self.out_bucket = out_bucket
        self.out_prefix = out_prefix[:-1] + job.name + "/"
        self.stamp = datetime.now(UTC).strftime("%Y-%m-%d_%H:%M:%S")

    def read_text(self, uri: str, what: str) -> str:
        try:
            bucket, key = parse_s3_uri(uri)
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        except Exception as exc:
            raise JobFailure(f"ClientError: cannot read {what} {uri}: {exc}") from exc

    def put_json(self, relative: str, body: Any, lines: bool = False) -> str:
        key = self.out_prefix + relative
        text = "".join(json.dumps(x) + "\n" for x in body) if lines else json.dumps(body)
        self.s3.put_object(Bucket=self.out_bucket, Key=key, Body=text.encode("utf-8"))
        return f"s3://{self.out_bucket}/{key}"

    def invoke(self, arn: str, payload: dict[str, Any], role: str) -> Any:
        try:
            result = self.lam.invoke(FunctionName=arn, Payload=json.dumps(payload).encode("utf-8"))
        except Exception as exc:
            raise JobFailure(f"ClientError: {role} Lambda {arn} could not be invoked: {exc}") from exc
        body = result["Payload"].read().decode("utf-8")
        if result.get("FunctionError"):
            raise JobFailure(f"ClientError: {role} Lambda {arn} failed: {body[:1000]}")
        try:
            return json.loads(body)
        except json.JSONDecodeError as exc:
            raise JobFailure(f"ClientError: {role} Lambda {arn} returned non-JSON: {body[:200]!r}") from exc

    def label_categories(self) -> list[str]:
        uri = self.job.request.get("LabelCategoryConfigS3Uri")
        if not uri:
            return []
        try:
            doc = json.loads(self.read_text(uri, "label category file"))
            return [str(entry["label"]) for entry in doc["labels"]]
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise JobFailure(f"ClientError: label category file {uri} is malformed: {exc}") from exc

    def element_name(self) -> str:
        uri = self.hc.get("UiConfig", {}).get("UiTemplateS3Uri")
        if not uri:
            return "annotatedResult"
        match = _ELEMENT_NAME.search(self.read_text(uri, "worker task template"))
        return match.group(1) if match else "annotatedResult"

    def manifest(self) -> list[dict[str, Any]]:
        uri = self.job.request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
        lines = []
        for number, line in enumerate(self.read_text(uri, "input manifest").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JobFailure(f"ClientError: input manifest line {number} is not JSON: {exc}") from exc
            if not isinstance(obj, dict) or not ("source-ref" in obj or "source" in obj):
                raise JobFailure(f"ClientError: input manifest line {number} has no source-ref or source")
            lines.append(obj)
        if not lines:
            raise JobFailure(f"ClientError: input manifest {uri} is empty")
        return lines

    def image(self, data_object: dict[str, Any]) -> tuple[ImageRef, int, int]:
        if "source-ref" not in data_object:
            return ImageRef(), 0, 0
        bucket, key = parse_s3_uri(str(data_object["source-ref"]))
        try:
            data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise JobFailure(f"ClientError: cannot read data object {data_object['source-ref']}: {exc}") from exc
        try:
            width, height, _ = image_size(data)
        except Exception:
            width = height = 0  # workers could not see it either; the post Lambda gets zero size
        return ImageRef(data=data, bucket=bucket, key=key), width, height


def run_job(job: LabelingJob) -> None:
    """Run ``job`` to a terminal state (idempotent: a finished job is left alone)."""
    with job.lock:
        if job.status in TERMINAL or job.running:
            return
        job.running = True
    try:
        _run(job)
    except JobFailure as exc:
        _finish(job, "Failed", str(exc))
    except WorkforceFailure as exc:
        _finish(job, "Failed", f"WorkforceError: {exc}")
    except Exception as exc:  # an emulator bug must still end the job visibly
        _finish(job, "Failed", f"InternalError: {type(exc).__name__}: {exc}")


def _run(job: LabelingJob) -> None:
    rt = _Runtime(job)
    lines = rt.manifest()
    labels = rt.label_categories()
    element = rt.element_name()
    pre_arn = rt.hc.get("PreHumanTaskLambdaArn")
    post_arn = rt.hc["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"]
    workers = int(rt.hc["NumberOfHumanWorkersPerDataObject"])
    payload: list[dict[str, Any]] = []
    skipped: set[str] = set()
    human_limit = _stopping_limit(job.request.get("StoppingConditions") or {}, len(lines))
    stopped_by_condition = False
    for index, data_object in enumerate(lines):
        if job.stop_requested:
            break
        if human_limit is not None and len(payload) >= human_limit:
            stopped_by_condition = True  # a StoppingConditions limit: the job ends Stopped
            break
        object_id = str(index)
        task_input: Any = data_object
        if pre_arn:
            answer = rt.invoke(
                pre_arn,
                {"version": "2018-10-16", "labelingJobArn": job.arn, "dataObject": data_object},
                "pre-annotation",
            )
            if not isinstance(answer, dict) or "taskInput" not in answer:
                raise JobFailure(
                    f"ClientError: pre-annotation Lambda {pre_arn} returned no taskInput: {str(answer)[:300]}"
                )
            required = answer.get("isHumanAnnotationRequired", True)
            if not isinstance(required, bool):
                raise JobFailure(
                    f"ClientError: pre-annotation Lambda {pre_arn} returned isHumanAnnotationRequired="
                    f"{required!r}; it must be a boolean"
                )
            if not required:
                skipped.add(object_id)
                continue
            task_input = answer["taskInput"]
        image, width, height = rt.image(data_object)
        task = Task(job.name, object_id, data_object, task_input, image, width, height, labels, workers, element)
        answers = SETTINGS.workforce.answer(task)
        if not answers:
            continue
        annotations = [
            {"workerId": a.worker_id, "annotationData": {"content": answer_content(task, a)}} for a in answers
        ]
        for a in annotations:
            rt.put_json(f"annotations/worker-response/iteration-1/{object_id}/{rt.stamp}.json", {"answers": [a]})
        data_ref = (
            {"s3Uri": data_object["source-ref"]} if "source-ref" in data_object else {"content": data_object["source"]}
        )
        payload.append({"datasetObjectId": object_id, "dataObject": data_ref, "annotations": annotations})

    consolidated: dict[str, dict[str, Any]] = {}
    if payload:
        payload_uri = rt.put_json(
            f"annotations/consolidated-annotation/consolidation-request/iteration-1/{rt.stamp}.json", payload
        )
        result = rt.invoke(
            post_arn,
            {
                "version": "2018-10-16",
                "labelingJobArn": job.arn,
                "labelCategories": labels,
                "labelAttributeName": rt.attr,
                "roleArn": job.request["RoleArn"],
                "payload": {"s3Uri": payload_uri},
            },
            "post-annotation",
        )
        if not isinstance(result, list):
            raise JobFailure(
                f"ClientError: post-annotation Lambda {post_arn} must return a list, got {type(result).__name__}"
            )
        for item in result:
            try:
                consolidated[str(item["datasetObjectId"])] = item["consolidatedAnnotation"]["content"]
            except (KeyError, TypeError) as exc:
                raise JobFailure(
                    f"ClientError: post-annotation Lambda {post_arn} returned a malformed item {str(item)[:300]}"
                ) from exc
        rt.put_json(f"annotations/consolidated-annotation/consolidation-response/iteration-1/{rt.stamp}.json", result)

    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    output_lines: list[dict[str, Any]] = []
    counters = dict.fromkeys(job.counters, 0)
    sent = {p["datasetObjectId"] for p in payload}
    for index, data_object in enumerate(lines):
        object_id = str(index)
        line = dict(data_object)
        content = consolidated.get(object_id)
        if content is not None:
            line.update(content)
            metadata = dict(content.get(f"{rt.attr}-metadata") or {})
            metadata.update(
                {
                    "type": "groundTruth/custom",
                    "job_name": f"labeling-job/{job.name}",
                    "creation_date": created,
                    "human-annotated": metadata.get("human-annotated", "yes"),
                }
            )
            line[f"{rt.attr}-metadata"] = metadata
            counters["TotalLabeled"] += 1
            counters["HumanLabeled"] += 1
        elif object_id in sent:
            line[f"{rt.attr}-metadata"] = {
                "failure-reason": "ClientError: the post-annotation Lambda returned no annotation for this object",
                "job-name": f"labeling-job/{job.name}",
                "creation-date": created,
            }
            counters["FailedNonRetryableError"] += 1
        else:
            counters["Unlabeled"] += 1
        output_lines.append(line)
    output_uri = rt.put_json("manifests/output/output.manifest", output_lines, lines=True)
    with job.lock:
        job.counters = counters
        job.output_uri = output_uri
    _finish(job, "Stopped" if job.stop_requested or stopped_by_condition else "Completed", None)


def _stopping_limit(conditions: dict[str, Any], objects: int) -> int | None:
    """How many objects humans may label before StoppingConditions stop the job (None: no limit)."""
    limits = []
    if conditions.get("MaxHumanLabeledObjectCount") is not None:
        limits.append(int(conditions["MaxHumanLabeledObjectCount"]))
    if conditions.get("MaxPercentageOfInputDatasetLabeled") is not None:
        limits.append(int(objects * int(conditions["MaxPercentageOfInputDatasetLabeled"]) / 100))
    return min(limits) if limits else None


def _finish(job: LabelingJob, status: str, reason: str | None) -> None:
    with job.lock:
        job.status = status
        job.failure_reason = reason
        job.modified = datetime.now(UTC)
        job.running = False
        job.log.append(f"{job.modified.isoformat()} {status} {reason or ''}".strip())
    emit_state_change(job)
    if SETTINGS.duplicate_events:
        emit_state_change(job)


def emit_state_change(job: LabelingJob) -> None:
    """Put the documented state-change event on the default bus (job ARN only in resources)."""
    from moto.events.models import events_backends

    backend = events_backends[job.account][job.region]
    backend.put_events(
        [
            {
                "Source": "aws.sagemaker",
                "DetailType": EVENT_DETAIL_TYPE,
                "Detail": json.dumps({"LabelingJobStatus": job.status}),
                "Resources": [job.arn],
            }
        ]
    )
