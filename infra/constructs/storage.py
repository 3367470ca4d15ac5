"""Storage: the data bucket (images, manifests, exports) and the bucket for its access logs."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import LabelLoopConfig
from infra.nag import acknowledge
from labelloop_core.contract import TMP_DIR


class Storage(Construct):
    """Data bucket with EventBridge notifications, TLS-only, encrypted, versioned, CORS for Ground Truth."""

    def __init__(self, scope: Construct, construct_id: str, *, config: LabelLoopConfig) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(365))],
        )
        acknowledge(
            self.access_logs,
            "AwsSolutions-S1",
            "This is the access-log bucket itself; logging it into itself would loop.",
        )
        tmp_prefix = config.work_prefix + TMP_DIR
        self.data = s3.Bucket(
            self,
            "Data",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="data/",
            removal_policy=RemovalPolicy.RETAIN,
            # The Ground Truth worker UI loads images straight from S3 in the browser.
            cors=[
                s3.CorsRule(
                    allowed_methods=[s3.HttpMethods.GET],
                    allowed_origins=["*"],
                    allowed_headers=["*"],
                    exposed_headers=["Access-Control-Allow-Origin"],
                )
            ],
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-temporary-work", prefix=tmp_prefix, expiration=Duration.days(7)),
                s3.LifecycleRule(id="expire-old-versions", noncurrent_version_expiration=Duration.days(30)),
                s3.LifecycleRule(
                    id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(2)
                ),
            ],
        )
        # A plain bucket property instead of CDK's notifications custom resource (one Lambda less).
        cfn_data = self.data.node.default_child
        assert isinstance(cfn_data, s3.CfnBucket)
        cfn_data.add_property_override("NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled", True)
        self.tmp_prefix = tmp_prefix
