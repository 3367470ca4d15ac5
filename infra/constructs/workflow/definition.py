"""The batch state definition, built in small steps (see the state diagram in the package docstring)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.constructs.hosting import ModelHosting
from infra.constructs.prelabel import Prelabeling
from infra.constructs.workflow.functions import WorkflowFunctions
from labelloop_core import contract
from labelloop_core.contract import BATCH_REPORT_FILE

_Guardable = TypeVar("_Guardable", tasks.LambdaInvoke, tasks.EventBridgePutEvents, sfn.DistributedMap)

#: Lambda refusing to start the function: the account's (or a reservation's) concurrency is in use.
LAMBDA_THROTTLED = ["Lambda.TooManyRequestsException"]
#: Errors worth retrying on any Lambda task (the service or the SDK, not our code), throttling included.
LAMBDA_TRANSIENT = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    *LAMBDA_THROTTLED,
    "Lambda.ClientExecutionTimeoutException",
]
#: Throttled attempts: 2 s doubling up to 60 s, full jitter (about 50 minutes on average), so a task
#: waits out other invocations holding a low concurrency quota (new accounts: 10; a shard worker may
#: run 15 minutes) instead of failing the execution.
THROTTLE_ATTEMPTS = 100
THROTTLE_MAX_DELAY = Duration.seconds(60)


def add_lambda_retries(task: tasks.LambdaInvoke) -> None:
    """Retry throttling patiently (capped, jittered backoff) and the other transient Lambda errors 6 times.

    Step Functions applies the first retrier whose errors match, so throttling gets its own, first.
    """
    task.add_retry(
        errors=LAMBDA_THROTTLED,
        interval=Duration.seconds(2),
        max_attempts=THROTTLE_ATTEMPTS,
        backoff_rate=2,
        max_delay=THROTTLE_MAX_DELAY,
        jitter_strategy=sfn.JitterType.FULL,
    )
    others = [error for error in LAMBDA_TRANSIENT if error not in LAMBDA_THROTTLED]
    task.add_retry(errors=others, interval=Duration.seconds(2), max_attempts=6, backoff_rate=2)


def idempotent_invoke(
    scope: Construct,
    state_id: str,
    function: lambda_.IFunction,
    payload: Mapping[str, object],
    result_path: str,
    *,
    attempts: int,
    interval_seconds: int = 5,
) -> tasks.LambdaInvoke:
    """A Lambda task whose action is idempotent: the throttle retry, then ``attempts`` retries of any failure."""
    task = tasks.LambdaInvoke(
        scope,
        state_id,
        lambda_function=function,
        payload=sfn.TaskInput.from_object(dict(payload)),
        payload_response_only=True,
        retry_on_service_exceptions=False,
        result_path=result_path,
    )
    add_lambda_retries(task)
    task.add_retry(
        errors=["States.TaskFailed"], interval=Duration.seconds(interval_seconds), max_attempts=attempts, backoff_rate=2
    )
    return task


def _batch_fields() -> dict[str, str]:
    return {
        "bucket": sfn.JsonPath.string_at("$.bucket"),
        "dataset": sfn.JsonPath.string_at("$.dataset"),
        "batch_id": sfn.JsonPath.string_at("$.batch_id"),
        "batch_prefix": sfn.JsonPath.string_at("$.batch_prefix"),
    }


def _hosting_fields() -> dict[str, str]:
    return {
        "bucket": sfn.JsonPath.string_at("$.bucket"),
        "batch_prefix": sfn.JsonPath.string_at("$.batch_prefix"),
    }


def _execution() -> dict[str, str]:
    return {
        "name": sfn.JsonPath.string_at("$$.Execution.Name"),
        "start_time": sfn.JsonPath.string_at("$$.Execution.StartTime"),
    }


class WorkflowDefinition:
    """Declares the states under ``scope`` and chains them; ``build()`` returns the start of the chain."""

    def __init__(
        self,
        scope: Construct,
        fns: WorkflowFunctions,
        prelabeling: Prelabeling,
        prelabel_max_concurrency: int,
        task_mode: str = "adjust",
        hosting: ModelHosting | None = None,
    ) -> None:
        self._scope = scope
        self._fns = fns
        self._prelabeling = prelabeling
        self._prelabel_max_concurrency = prelabel_max_concurrency
        self._verify_first = task_mode == "verify"
        self._record_failure: sfn.IChainable | None = None
        self._hosting = hosting

    @property
    def invoked(self) -> tuple[lambda_.Function, ...]:
        """Every function a state invokes (the state machine's role may invoke exactly these)."""
        p = self._prelabeling
        hosting = (self._hosting.function,) if self._hosting is not None else ()
        return (*self._fns.all(), p.prelabel_function, p.route_function, p.calibrate_function, *hosting)

    def build(self) -> sfn.IChainable:
        """Declare every state and return the definition's first state, chained to the rest."""
        self._record_failure = self._build_failure()
        init = sfn.Pass(
            self._scope,
            "InitBuild",
            result=sfn.Result.from_object({"cursor": 0, "done": False}),
            result_path="$.build",
        )
        build = self._guarded(
            self._invoke(
                "BuildManifest",
                self._fns.build,
                {**_batch_fields(), "cursor": sfn.JsonPath.number_at("$.build.cursor")},
                "$.build",
            )
        )
        prelabel_map = self._guarded(self._build_prelabel())
        prelabel: sfn.IChainable = prelabel_map
        route = self._guarded(self._invoke("Route", self._prelabeling.route_function, _batch_fields(), "$.route"))
        merge = self._build_merge()
        if self._verify_first:
            start_review: sfn.IChainable = self._build_verify_then_adjust(merge)
        else:
            start_review = self._build_review(merge)
        needs_review = self._build_needs_review(start_review, merge)
        nothing_to_label = self._build_nothing_to_label(merge)
        calibrate = self._guarded(
            self._invoke("Calibrate", self._prelabeling.calibrate_function, _batch_fields(), "$.calibration")
        )
        announce = self._guarded(self._build_announce())

        after_prelabel: sfn.IChainable = route
        if self._hosting is not None:
            prelabel, after_prelabel = self._build_model_hosting(prelabel_map, route)
        build_done = sfn.Choice(self._scope, "BuildDone?")
        any_valid = (
            sfn.Choice(self._scope, "AnyValid?")
            .when(sfn.Condition.number_greater_than("$.build.valid", 0), prelabel)
            .otherwise(nothing_to_label)
        )
        build_done.when(sfn.Condition.boolean_equals("$.build.done", True), any_valid).otherwise(build)
        prelabel_map.next(after_prelabel)
        route.next(needs_review)
        merge.next(calibrate).next(announce).next(sfn.Succeed(self._scope, "Done"))
        return init.next(build).next(build_done)

    # ------------------------------------------------------------------ helpers
    def _invoke(
        self,
        state_id: str,
        function: lambda_.IFunction,
        payload: Mapping[str, object],
        result_path: str | None,
        idempotent: bool = True,
    ) -> tasks.LambdaInvoke:
        """A Lambda task that retries transient Lambda errors (and, if idempotent, one function error)."""
        task = tasks.LambdaInvoke(
            self._scope,
            state_id,
            lambda_function=function,
            payload=sfn.TaskInput.from_object(dict(payload)),
            payload_response_only=True,
            retry_on_service_exceptions=False,
            result_path=result_path,
        )
        add_lambda_retries(task)
        if idempotent:
            # Our handlers are safe to re-run (they overwrite the same outputs); one more try
            # rides out a transient S3/API error surfacing as a function error.
            task.add_retry(errors=["States.TaskFailed"], interval=Duration.seconds(1), max_attempts=1, backoff_rate=2)
        return task

    def _guarded(self, task: _Guardable) -> _Guardable:
        """Send any error of ``task`` to RecordFailure (with the error under ``$.error``)."""
        assert self._record_failure is not None, "build the failure path first"
        task.add_catch(self._record_failure, errors=["States.ALL"], result_path="$.error")
        return task

    # ------------------------------------------------------------------ steps
    def _build_failure(self) -> sfn.IChainable:
        """[ReleaseModelOnFailure →] RecordFailure → Failed: every error ends here, with its reason in report.json."""
        failed = sfn.Fail(
            self._scope, "Failed", error="BatchFailed", cause=f"The batch failed: its {BATCH_REPORT_FILE} says why"
        )
        record = self._invoke(
            "RecordFailure",
            self._fns.record_failure,
            {**_batch_fields(), "error": sfn.JsonPath.object_at("$.error"), "execution": _execution()},
            sfn.JsonPath.DISCARD,
        )
        record.next(failed)
        if self._hosting is None:
            return record
        # A failed batch gives its lease back at once (else the version idles until the lease expires).
        release = self._release_model("ReleaseModelOnFailure")
        release.add_catch(record, errors=["States.ALL"], result_path="$.release_error")
        release.next(record)
        return release

    def _release_model(self, state_id: str) -> tasks.LambdaInvoke:
        assert self._hosting is not None
        payload = {"action": "release", **_hosting_fields()}
        return self._invoke(state_id, self._hosting.function, payload, sfn.JsonPath.DISCARD)

    def _build_model_hosting(
        self, prelabel: sfn.DistributedMap, route: sfn.IChainable
    ) -> tuple[sfn.IChainable, sfn.IChainable]:
        """InitModelHosting → EnsureModel ⟲ (WaitForModel while not ready) → ``prelabel`` → ReleaseModel → ``route``.

        Returns (the first state, the state after the map). EnsureModel starts the pinned version on
        demand; a start that cannot succeed (ModelStartFailed) is not retried: the batch fails with it.
        """
        assert self._hosting is not None
        init = sfn.Pass(
            self._scope, "InitModelHosting", result=sfn.Result.from_object({"since": -1}), result_path="$.hosting"
        )
        ensure = tasks.LambdaInvoke(
            self._scope,
            "EnsureModel",
            lambda_function=self._hosting.function,
            payload=sfn.TaskInput.from_object(
                {"action": "ensure", **_hosting_fields(), "since": sfn.JsonPath.number_at("$.hosting.since")}
            ),
            payload_response_only=True,
            retry_on_service_exceptions=False,
            result_path="$.hosting",
        )
        add_lambda_retries(ensure)
        ensure.add_retry(errors=["ModelStartFailed"], max_attempts=0)
        ensure.add_retry(errors=["States.TaskFailed"], interval=Duration.seconds(2), max_attempts=3, backoff_rate=2)
        self._guarded(ensure)
        wait = sfn.Wait(
            self._scope, "WaitForModel", time=sfn.WaitTime.duration(Duration.seconds(self._hosting.poll_seconds))
        )
        ready = (
            sfn.Choice(self._scope, "ModelReady?")
            .when(sfn.Condition.boolean_equals("$.hosting.ready", True), prelabel)
            .otherwise(wait.next(ensure))
        )
        ensure.next(ready)
        release = self._release_model("ReleaseModel")
        # The lease expires anyway: a release that keeps failing never fails the batch.
        release.add_catch(route, errors=["States.ALL"], result_path="$.release_error")
        release.next(route)
        return init.next(ensure), release

    def _build_prelabel(self) -> sfn.DistributedMap:
        """A Distributed Map over the batch's shards, one PrelabelShard child per shard."""
        shard_task = self._invoke(
            "PrelabelShard",
            self._prelabeling.prelabel_function,
            {
                "bucket": sfn.JsonPath.string_at("$.bucket"),
                "batch_prefix": sfn.JsonPath.string_at("$.batch_prefix"),
                "shard_key": sfn.JsonPath.string_at("$.shard_key"),
            },
            sfn.JsonPath.DISCARD,
        )
        prelabel = sfn.DistributedMap(
            self._scope,
            "Prelabel",
            item_reader=sfn.S3ObjectsItemReader(
                bucket_name_path=sfn.JsonPath.string_at("$.bucket"),
                prefix=sfn.JsonPath.format("{}" + contract.SHARDS_DIR, sfn.JsonPath.string_at("$.batch_prefix")),
            ),
            item_selector={
                "bucket": sfn.JsonPath.string_at("$.bucket"),
                "batch_prefix": sfn.JsonPath.string_at("$.batch_prefix"),
                "shard_key": sfn.JsonPath.string_at("$$.Map.Item.Value.Key"),
            },
            max_concurrency=self._prelabel_max_concurrency,
            map_execution_type=sfn.StateMachineType.STANDARD,
            result_path=sfn.JsonPath.DISCARD,
        )
        prelabel.item_processor(shard_task)
        return prelabel

    def _build_merge(self) -> tasks.LambdaInvoke:
        """Merge: accepted + reviewed lines into the output manifest and report."""
        payload: dict[str, object] = {
            **_batch_fields(),
            "review": sfn.JsonPath.object_at("$.review"),
            "route": sfn.JsonPath.object_at("$.route"),
            "build": sfn.JsonPath.object_at("$.build"),
            "execution": _execution(),
        }
        if self._verify_first:
            # Every path to Merge sets both (the stages, or the skip states' defaults).
            payload["verify"] = sfn.JsonPath.object_at("$.verify")
            payload["stages"] = sfn.JsonPath.object_at("$.stages")
        return self._guarded(self._invoke("Merge", self._fns.merge, payload, "$.merge"))

    def _build_review(self, then: sfn.IChainable, stage: str = "") -> tasks.LambdaInvoke:
        """Start<Stage> (task token, bounded wait) ⟲ Reconcile<Stage> on timeout, until <Stage>Done? → ``then``.

        No stage is adjust mode's single review (result ``$.review``); ``verify``/``adjust`` are the two
        chained jobs of verify-then-adjust (results ``$.verify`` and ``$.review``).
        """
        name = stage.capitalize() or "Review"
        result_path = "$.verify" if stage == "verify" else "$.review"
        fields: dict[str, object] = {**_batch_fields(), **({"stage": stage} if stage else {})}
        start = tasks.LambdaInvoke(
            self._scope,
            f"Start{name}",
            lambda_function=self._fns.start_review,
            integration_pattern=sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN,
            payload=sfn.TaskInput.from_object({**fields, "token": sfn.JsonPath.task_token}),
            retry_on_service_exceptions=False,
            result_path=result_path,
            task_timeout=sfn.Timeout.at("$.review_wait_seconds"),
        )
        add_lambda_retries(start)
        reconcile = self._guarded(
            self._invoke(f"Reconcile{name}", self._fns.job_event, {**fields, "action": "reconcile"}, result_path)
        )
        start.add_catch(reconcile, errors=["States.Timeout"], result_path="$.review_timeout")
        self._guarded(start)
        done = (
            sfn.Choice(self._scope, f"{name}Done?")
            .when(sfn.Condition.string_equals(f"{result_path}.status", "Completed"), then)
            .otherwise(start)
        )
        start.next(done)
        reconcile.next(done)
        return start

    def _build_verify_then_adjust(self, merge: sfn.IChainable) -> tasks.LambdaInvoke:
        """PlanReviewStages → NeedsVerify? → StartVerify… → SplitVerdicts → NeedsAdjust? → StartAdjust… → merge.

        An empty stage is skipped (SkipVerify / SkipAdjust): no labeling job is created without images.
        """
        stages_fn = self._fns.review_stages
        assert stages_fn is not None, "taskMode verify declares the review-stages function"
        skipped = sfn.Result.from_object({"status": "skipped"})
        start_adjust = self._build_review(merge, "adjust")
        skip_adjust = sfn.Pass(self._scope, "SkipAdjust", result=skipped, result_path="$.review").next(merge)
        needs_adjust = (
            sfn.Choice(self._scope, "NeedsAdjust?")
            .when(sfn.Condition.number_greater_than("$.stages.adjust", 0), start_adjust)
            .otherwise(skip_adjust)
        )
        split = self._guarded(
            self._invoke(
                "SplitVerdicts",
                stages_fn,
                {**_batch_fields(), "action": "split", "verify": sfn.JsonPath.object_at("$.verify")},
                "$.stages",
            )
        )
        split.next(needs_adjust)
        start_verify = self._build_review(split, "verify")
        skip_verify = sfn.Pass(self._scope, "SkipVerify", result=skipped, result_path="$.verify").next(split)
        needs_verify = (
            sfn.Choice(self._scope, "NeedsVerify?")
            .when(sfn.Condition.number_greater_than("$.stages.verify", 0), start_verify)
            .otherwise(skip_verify)
        )
        plan = self._guarded(
            self._invoke("PlanReviewStages", stages_fn, {**_batch_fields(), "action": "plan"}, "$.stages")
        )
        plan.next(needs_verify)
        return plan

    def _skipped_stages(self) -> dict[str, object]:
        """What the skip paths give Merge in verify mode: no verify job, no stage counts."""
        return {"verify": {"status": "skipped"}, "stages": {}} if self._verify_first else {}

    def _build_needs_review(self, start_review: sfn.IChainable, merge: sfn.IChainable) -> sfn.Choice:
        """NeedsReview?: review when the route sent any image to review, else SkipReview → merge."""
        skipped = sfn.Result.from_object({"status": "skipped"})
        skip_review = sfn.Pass(self._scope, "SkipReview", result=skipped, result_path="$.review")
        if self._verify_first:  # Merge also reads $.verify and $.stages
            skip_review.next(sfn.Pass(self._scope, "NoVerify", result=skipped, result_path="$.verify")).next(
                sfn.Pass(self._scope, "NoStages", result=sfn.Result.from_object({}), result_path="$.stages")
            ).next(merge)
        else:
            skip_review.next(merge)
        return (
            sfn.Choice(self._scope, "NeedsReview?")
            .when(sfn.Condition.number_greater_than("$.route.review", 0), start_review)
            .otherwise(skip_review)
        )

    @staticmethod
    def _passthrough() -> dict[str, object]:
        return {
            **_batch_fields(),
            "review_wait_seconds": sfn.JsonPath.number_at("$.review_wait_seconds"),
            "build": sfn.JsonPath.object_at("$.build"),
        }

    def _build_nothing_to_label(self, merge: sfn.IChainable) -> sfn.Chain:
        """NothingToLabel: no valid image, so merge an empty route (the report still lists the rejections)."""
        return sfn.Pass(
            self._scope,
            "NothingToLabel",
            parameters={
                **self._passthrough(),
                "route": {"accepted": 0, "review": 0, "audit": 0},
                "review": {"status": "skipped"},
                **self._skipped_stages(),
            },
        ).next(merge)

    def _build_announce(self) -> tasks.EventBridgePutEvents:
        """Announce: put "Batch Labeled" on the default event bus (the export listens)."""
        announce = tasks.EventBridgePutEvents(
            self._scope,
            "Announce",
            entries=[
                tasks.EventBridgePutEventsEntry(
                    source=contract.WORKFLOW_EVENT_SOURCE,
                    detail_type=contract.BATCH_LABELED,
                    detail=sfn.TaskInput.from_object(
                        {
                            "dataset": sfn.JsonPath.string_at("$.dataset"),
                            "batch_id": sfn.JsonPath.string_at("$.batch_id"),
                            "output_manifest": sfn.JsonPath.string_at("$.merge.output_manifest"),
                            "report": sfn.JsonPath.string_at("$.merge.report"),
                        }
                    ),
                )
            ],
            result_path=sfn.JsonPath.DISCARD,
        )
        announce.add_retry(errors=["States.TaskFailed"], interval=Duration.seconds(2), max_attempts=3, backoff_rate=2)
        return announce
