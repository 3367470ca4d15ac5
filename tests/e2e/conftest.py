"""Shared e2e fixtures: the synthesized LabelLoop stack running in the in-process emulation.

- ``cloud``: a fresh ``LocalCloud`` of the real assembly per test (defaults: AcceptPrelabels
  workforce, NoPredictor model, Ground Truth jobs on a background thread);
- ``start_cloud``: a factory taking ``LocalCloud.start`` keyword arguments (workforce, predictor,
  labels, model_faults, gt_mode, duplicate_gt_events, assembly=...) for tests that need options;
- ``pipeline_assembly``: LabelLoop synthesized with ``workteamArn`` = ``LOCAL_WORKTEAM_ARN`` (start the
  cloud with ``workteams=[LOCAL_WORKTEAM]``) so the whole workflow can reach Ground Truth;
- ``mini_assembly``: a tiny CDK app (own asset with echo/failing/pre/post handlers, an
  EventBridge-enabled bucket via CDK's notification custom resource, rules to Lambda, SQS and a
  state machine) that exercises every emulation patch independently of LabelLoop's own stack.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.harness import LocalCloud

MINI_STACK = "MiniEmulation"
LOCAL_WORKTEAM = "labelloop-local"
LOCAL_WORKTEAM_ARN = f"arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/{LOCAL_WORKTEAM}"

ECHO = '''
"""Echo the event with facts about where the code runs (module file, env, host packages)."""
import os

import PIL
import fakedep
from labelloop_mini import marker

print("echo cold start")


def handler(event, context):
    print("echo got", event)
    return {
        "event": event,
        "marker": marker.VALUE,
        "role": os.environ.get("ROLE"),
        "function": context.function_name,
        "module_file": __file__,
        "pil_file": PIL.__file__,
        "fakedep": fakedep.WHERE,
    }
'''

FAIL = """
def handler(event, context):
    raise ValueError("bad input: " + str(event.get("why")))
"""

PRE = '''
"""Minimal pre-annotation Lambda: pre-draw boxes carried in the manifest line, skip on request."""


def handler(event, context):
    obj = event["dataObject"]
    return {
        "taskInput": {"taskObject": obj["source-ref"], "initialValue": obj.get("prelabels", [])},
        "isHumanAnnotationRequired": not obj.get("skip", False),
    }
'''

POST = '''
"""Minimal post-annotation Lambda: first worker's boxes, GT bounding-box content."""
import json

import boto3


def handler(event, context):
    bucket, key = event["payload"]["s3Uri"][5:].split("/", 1)
    items = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    attr = event["labelAttributeName"]
    classes = event["labelCategories"]
    out = []
    for item in items:
        first = json.loads(item["annotations"][0]["annotationData"]["content"])
        result = next(iter(first.values()))
        size = result["inputImageProperties"]
        out.append({
            "datasetObjectId": item["datasetObjectId"],
            "consolidatedAnnotation": {"content": {
                attr: {
                    "image_size": [{"width": size["width"], "height": size["height"], "depth": 3}],
                    "annotations": [
                        {"class_id": classes.index(b["label"]), "left": b["left"], "top": b["top"],
                         "width": b["width"], "height": b["height"]}
                        for b in result["boundingBoxes"]
                    ],
                    "workers": len(item["annotations"]),
                },
                attr + "-metadata": {"class-map": {str(i): c for i, c in enumerate(classes)},
                                     "type": "groundtruth/object-detection", "human-annotated": "yes"},
            }},
        })
    return out
'''


PRODUCE = '''
"""Announce work on EventBridge, then write the marker the consumer needs (AWS order: async)."""
import json
import os

import boto3


def handler(event, context):
    boto3.client("events").put_events(
        Entries=[{"Source": "test.order", "DetailType": "Produced", "Detail": json.dumps({"n": 1})}]
    )
    boto3.client("s3").put_object(Bucket=os.environ["BUCKET"], Key="order/marker", Body=b"written")
    return {"produced": True}
'''

CONSUME = '''
"""Read the producer's marker: exists only if this runs after the producer returned."""
import os

import boto3


def handler(event, context):
    body = boto3.client("s3").get_object(Bucket=os.environ["BUCKET"], Key="order/marker")["Body"].read()
    return {"marker": body.decode(), "detail": event["detail"]}
'''

HOLD = '''
"""Run until the test releases it (an object under event["release"]), so the test decides how long it runs."""
import os
import time

import boto3


def handler(event, context):
    s3 = boto3.client("s3")
    deadline = time.time() + 60
    while time.time() < deadline:
        if s3.list_objects_v2(Bucket=os.environ["BUCKET"], Prefix=event["release"]).get("KeyCount"):
            return {"released": True}
        time.sleep(0.02)
    return {"released": False}
'''


def _host_version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def _write_mini_asset(root: Path) -> Path:
    """The mini app's Lambda asset: our handlers, a fake bundled dep, and a broken bundled PIL."""
    asset = root / "asset"
    files = {
        "handlers/__init__.py": "",
        "handlers/echo.py": ECHO,
        "handlers/fail.py": FAIL,
        "handlers/pre.py": PRE,
        "handlers/post.py": POST,
        "handlers/produce.py": PRODUCE,
        "handlers/consume.py": CONSUME,
        "handlers/hold.py": HOLD,
        "labelloop_mini/__init__.py": "",
        "labelloop_mini/marker.py": "VALUE = 'from-the-zip'\n",
        # A pure-Python dependency the host lacks: must load from the zip.
        "fakedep/__init__.py": "WHERE = 'zip'\n",
        "fakedep-1.0.dist-info/RECORD": "fakedep/__init__.py,,\nfakedep-1.0.dist-info/RECORD,,\n",
        "fakedep-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        # A platform build the host must NOT load (stands in for the arm64 pillow wheel); the host
        # stands in for it at the same version.
        "PIL/__init__.py": "raise ImportError('arm64 build of PIL loaded on the host')\n",
        "pillow-12.3.0.dist-info/RECORD": "PIL/__init__.py,,\npillow-12.3.0.dist-info/RECORD,,\n",
        "pillow-12.3.0.dist-info/top_level.txt": "PIL\n",
        "pillow-12.3.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: pillow\nVersion: {_host_version('pillow')}",
        "pillow-12.3.0.dist-info/WHEEL": "Wheel-Version: 1.0\nTag: cp314-cp314-manylinux_2_28_aarch64\n",
    }
    for relative, text in files.items():
        path = asset / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return asset


def synthesize_mini(outdir: Path) -> Path:
    """Synthesize the mini app; every emulation gap it needs appears in its template."""
    from aws_cdk import App, CfnOutput, Duration, Stack
    from aws_cdk import aws_events as events
    from aws_cdk import aws_events_targets as targets
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk import aws_lambda_destinations as destinations
    from aws_cdk import aws_lambda_event_sources as sources
    from aws_cdk import aws_s3 as s3
    from aws_cdk import aws_sqs as sqs
    from aws_cdk import aws_stepfunctions as sfn
    from aws_cdk import aws_stepfunctions_tasks as tasks

    asset = _write_mini_asset(outdir.parent / "mini-src")
    app = App(outdir=str(outdir))
    stack = Stack(app, MINI_STACK)
    code = lambda_.Code.from_asset(str(asset))

    def function(logical_id: str, handler: str, role: str) -> lambda_.Function:
        return lambda_.Function(
            stack,
            logical_id,
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.ARM_64,
            handler=handler,
            code=code,
            timeout=Duration.seconds(30),
            environment={"ROLE": role},
        )

    echo = function("Echo", "handlers.echo.handler", "first")
    echo_twin = function("EchoTwin", "handlers.echo.handler", "second")
    fail = function("Fail", "handlers.fail.handler", "fail")
    pre = function("SageMakerPre", "handlers.pre.handler", "pre")
    post = function("SageMakerPost", "handlers.post.handler", "post")
    bucket = s3.Bucket(stack, "Data", event_bridge_enabled=True, versioned=True)
    queue = sqs.Queue(stack, "Intake")
    jobs_queue = sqs.Queue(stack, "JobEvents")
    machine = sfn.StateMachine(
        stack,
        "Flow",
        definition_body=sfn.DefinitionBody.from_chainable(
            tasks.LambdaInvoke(stack, "CallEcho", lambda_function=echo, payload_response_only=True).next(
                sfn.Succeed(stack, "Done")
            )
        ),
    )
    s3_rule = events.Rule(
        stack,
        "ObjectCreated",
        event_pattern=events.EventPattern(
            source=["aws.s3"],
            detail_type=["Object Created"],
            detail={"bucket": {"name": [bucket.bucket_name]}, "object": {"key": [{"prefix": "incoming/"}]}},
        ),
    )
    s3_rule.add_target(targets.SqsQueue(queue))
    s3_rule.add_target(
        targets.LambdaFunction(
            echo,
            event=events.RuleTargetInput.from_object(
                {"key": events.EventField.from_path("$.detail.object.key"), "kind": "s3"}
            ),
        )
    )
    s3_rule.add_target(targets.SfnStateMachine(machine, input=events.RuleTargetInput.from_event_path("$.detail")))
    job_rule = events.Rule(
        stack,
        "JobState",
        event_pattern=events.EventPattern(
            source=["aws.sagemaker"], detail_type=["SageMaker Ground Truth Labeling Job State Change"]
        ),
    )
    job_rule.add_target(targets.SqsQueue(jobs_queue))
    # SQS → Lambda with batching and partial batch responses (the intake pattern).
    batches = sqs.Queue(stack, "Batches", visibility_timeout=Duration.seconds(60))
    echo_twin.add_event_source(
        sources.SqsEventSource(
            batches, batch_size=5, max_batching_window=Duration.seconds(2), report_batch_item_failures=True
        )
    )
    # Asynchronous invocation: one retry, then the failure record goes to a queue.
    failures = sqs.Queue(stack, "AsyncFailures")
    fail.configure_async_invoke(retry_attempts=1, on_failure=destinations.SqsDestination(failures))
    custom_rule = events.Rule(stack, "Custom", event_pattern=events.EventPattern(source=["test.emulation"]))
    custom_rule.add_target(targets.LambdaFunction(fail))
    producer = function("Producer", "handlers.produce.handler", "producer")
    consumer = function("Consumer", "handlers.consume.handler", "consumer")
    hold = function("Hold", "handlers.hold.handler", "hold")
    for fn in (producer, consumer, hold):
        fn.add_environment("BUCKET", bucket.bucket_name)
    order_rule = events.Rule(stack, "Order", event_pattern=events.EventPattern(source=["test.order"]))
    order_rule.add_target(targets.LambdaFunction(consumer))
    for name, value in {
        "DataBucketName": bucket.bucket_name,
        "IncomingPrefix": "incoming/",
        "EchoName": echo.function_name,
        "EchoTwinName": echo_twin.function_name,
        "FailName": fail.function_name,
        "ConsumerName": consumer.function_name,
        "HoldName": hold.function_name,
        "PreArn": pre.function_arn,
        "PostArn": post.function_arn,
        "FlowArn": machine.state_machine_arn,
    }.items():
        CfnOutput(stack, name, value=value)
    return Path(app.synth().directory)


@pytest.fixture(scope="session")
def mini_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mini app synthesized once per session."""
    return synthesize_mini(tmp_path_factory.mktemp("mini") / "cdk.out")


@pytest.fixture(scope="session")
def pipeline_assembly() -> Path:
    """LabelLoop synthesized with a workteam configured (``LOCAL_WORKTEAM``), so review can start."""
    from tests.conftest import shared_assembly

    return shared_assembly({"workteamArn": LOCAL_WORKTEAM_ARN})


@pytest.fixture
def cloud(assembly_dir: Path) -> Iterator[LocalCloud]:
    """The real LabelLoop assembly deployed into a fresh emulation."""
    with LocalCloud.start(assembly_dir) as local:
        yield local


@pytest.fixture
def start_cloud(assembly_dir: Path) -> Iterator[Callable[..., LocalCloud]]:
    """Start a LocalCloud with options: ``start_cloud(workforce=..., assembly=mini_assembly)``."""
    with contextlib.ExitStack() as stack:

        def start(**kwargs: Any) -> LocalCloud:
            assembly = kwargs.pop("assembly", assembly_dir)
            if "stack_name" not in kwargs and (Path(assembly) / f"{MINI_STACK}.template.json").exists():
                kwargs["stack_name"] = MINI_STACK
            return stack.enter_context(LocalCloud.start(assembly, **kwargs))

        yield start


@pytest.fixture
def mini_cloud(mini_assembly: Path) -> Iterator[LocalCloud]:
    """The mini app deployed into a fresh emulation."""
    with LocalCloud.start(mini_assembly, stack_name=MINI_STACK) as local:
        yield local
