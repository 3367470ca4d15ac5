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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from moto.sagemaker.exceptions import ResourceInUseException, ResourceNotFound, ValidationError
from moto.sagemaker.models import sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse

from labelloop_core import contract
from labelloop_core.contract import OUTPUT_MANIFEST
from sandbox.dispatch import add_operations, remove_operations
from sandbox.gt_runtime import (
    JobFailure,
    JobRuntime,
    LabelingJob,
    consolidated_contents,
    output_manifest,
    task_input_of,
)
from sandbox.service_model import validate_request
from sandbox.workforce import AcceptPrelabels, Task, Workforce, WorkforceFailure, answer_content

EVENT_DETAIL_TYPE = contract.JOB_STATE_CHANGE
TERMINAL = ("Completed", "Failed", "Stopped")
PUBLIC_WORKTEAM_ACCOUNT = "394669845002"


@dataclass
class GroundTruthEmulationSettings:
    """How the emulated Ground Truth behaves; the harness sets these per LocalCloud."""

    workforce: Workforce = field(default_factory=AcceptPrelabels)
    mode: str = "thread"  # "thread": run after create returns; "manual": wait for advance()
    start_delay_s: float = 0.05
    duplicate_events: bool = False


SETTINGS = GroundTruthEmulationSettings()
_PATCH_STATE: dict[str, Any] = {}
_THREADS: list[threading.Thread] = []
_THREADS_LOCK = threading.Lock()


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


def install(settings: GroundTruthEmulationSettings | None = None) -> None:
    """Add the labeling-job and workteam operations to moto's SageMaker dispatch (idempotent)."""
    global SETTINGS
    if settings is not None:
        SETTINGS = settings
    add_operations(SageMakerResponse, OPERATIONS, _PATCH_STATE)


def uninstall() -> None:
    """Remove the operations again (restoring any moto implementation they shadowed)."""
    remove_operations(SageMakerResponse, _PATCH_STATE)


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
    rt = JobRuntime(job)
    lines = rt.manifest()
    labels = rt.label_categories()
    payload, stopped_by_condition = _collect_answers(job, rt, lines, labels)
    consolidated = _consolidate(job, rt, payload, labels)
    sent = {p["datasetObjectId"] for p in payload}
    output_lines, counters = output_manifest(lines, consolidated, sent, rt.attr, job.name, list(job.counters))
    output_uri = rt.put_json(f"{contract.JOB_OUTPUT_DIR}{OUTPUT_MANIFEST}", output_lines, lines=True)
    with job.lock:
        job.counters = counters
        job.output_uri = output_uri
    _finish(job, "Stopped" if job.stop_requested or stopped_by_condition else "Completed", None)


def _collect_answers(
    job: LabelingJob, rt: JobRuntime, lines: list[dict[str, Any]], labels: list[str]
) -> tuple[list[dict[str, Any]], bool]:
    """Show each object workers must see to the workforce; returns the consolidation payload and
    whether a StoppingConditions limit ended the job."""
    element = rt.element_name()
    pre_arn = rt.hc.get("PreHumanTaskLambdaArn")
    workers = int(rt.hc["NumberOfHumanWorkersPerDataObject"])
    payload: list[dict[str, Any]] = []
    human_limit = _stopping_limit(job.request.get("StoppingConditions") or {}, len(lines))
    for index, data_object in enumerate(lines):
        if job.stop_requested:
            break
        if human_limit is not None and len(payload) >= human_limit:
            return payload, True  # a StoppingConditions limit: the job ends Stopped
        object_id = str(index)
        task_input: Any = data_object
        if pre_arn:
            answer = rt.invoke(
                pre_arn,
                {"version": "2018-10-16", "labelingJobArn": job.arn, "dataObject": data_object},
                "pre-annotation",
            )
            required, task_input = task_input_of(answer, pre_arn)
            if not required:
                continue  # not shown to workers; Unlabeled in the output
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
    return payload, False


def _consolidate(
    job: LabelingJob, rt: JobRuntime, payload: list[dict[str, Any]], labels: list[str]
) -> dict[str, dict[str, Any]]:
    """Write the consolidation request, invoke the post-annotation Lambda, keep and return its answer."""
    if not payload:
        return {}
    post_arn = rt.hc["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"]
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
    consolidated = consolidated_contents(result, post_arn)
    rt.put_json(f"annotations/consolidated-annotation/consolidation-response/iteration-1/{rt.stamp}.json", result)
    return consolidated


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
