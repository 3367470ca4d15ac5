"""The stack with ``encryption: kms`` deploys into the emulation and an upload still reaches the
workflow through the KMS-encrypted bucket and queue (moto records the keys; it does not encrypt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox.harness import LocalCloud
from tests import intake_images as gen

pytestmark = pytest.mark.e2e


def test_kms_stack_deploys_and_an_upload_reaches_the_workflow(kms_assembly_dir: Path) -> None:
    with LocalCloud.start(kms_assembly_dir, esm_mode="manual") as cloud:
        [key_id] = cloud.deployment.physical_ids("AWS::KMS::Key").values()
        key = cloud.client("kms").describe_key(KeyId=key_id)["KeyMetadata"]
        assert key["Enabled"] and cloud.client("kms").get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"]

        rule = cloud.client("s3").get_bucket_encryption(Bucket=cloud.bucket)["ServerSideEncryptionConfiguration"]
        assert rule["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        sqs = cloud.client("sqs")
        for url in sqs.list_queues()["QueueUrls"]:
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["KmsMasterKeyId"])["Attributes"]
            assert attributes.get("KmsMasterKeyId"), url
        groups = cloud.client("logs").describe_log_groups()["logGroups"]
        assert groups and all(key_id in group.get("kmsKeyId", "") for group in groups)

        cloud.put_bytes("incoming/street/a.jpg", gen.jpeg(64, 48))
        assert cloud.flush_event_sources() >= 1
        sfn = cloud.client("stepfunctions")

        def started() -> list[dict[str, Any]] | None:
            runs = sfn.list_executions(stateMachineArn=cloud.state_machine_arn("Workflow"))["executions"]
            return runs or None

        [run] = cloud.wait_for(started, timeout=120, interval=0.2, message="a workflow execution for the upload")
        described = sfn.describe_execution(executionArn=run["executionArn"])
        assert '"dataset": "street"' in described["input"].replace('":"', '": "')
