"""What the hosts may do: IAM documents and GCP role lists, as pure functions and constants tests can read."""

from __future__ import annotations

import json

# GCP: the TPU service account writes to its run's bucket and to Cloud Logging, nothing more. Deleting TPU nodes
# is the teardown account's alone (catalog/teardown.py): granted on the project, it reaches every node there.
TPU_BUCKET_ROLE = "roles/storage.objectUser"
TPU_PROJECT_ROLES = ("roles/logging.logWriter",)
TPU_TEARDOWN_PERMISSIONS = ("tpu.nodes.delete", "tpu.nodes.get")  # get: the workflow waits for the 404
TPU_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
"""OAuth scopes only gate which APIs a token may call; the roles above are what the account may do."""

# AWS: pull the training image, read and write objects under the stack's prefix.
ECR_PULL_ACTIONS = ("ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage")
S3_OBJECT_ACTIONS = ("s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload")


def render_assume_role_policy(service: str) -> str:
    """Trust policy letting one AWS service (e.g. ec2.amazonaws.com) assume the role."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }, indent=2)


def render_tls_only_bucket_policy(bucket_arn: str) -> str:
    """Bucket policy refusing every request made without TLS, to the bucket and to its objects, whoever makes it.

    S3 answers plain HTTP unless a bucket policy denies `aws:SecureTransport` false; an explicit Deny outranks
    any Allow, so no role or key can get around it.
    """
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                       "Resource": [bucket_arn, f"{bucket_arn}/*"],
                       "Condition": {"Bool": {"aws:SecureTransport": "false"}}}],
    }, indent=2)


def render_gpu_instance_policy(*, bucket_arn: str, prefix: str, region: str, registry_account: str,
                               repository: str) -> str:
    """Inline policy for a GPU instance: ECR pull of one repository, S3 read/write under one bucket prefix."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            # GetAuthorizationToken has no resource-level permissions: AWS requires "*".
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Sid": "PullTrainingImage", "Effect": "Allow", "Action": list(ECR_PULL_ACTIONS),
             "Resource": f"arn:aws:ecr:{region}:{registry_account}:repository/{repository}"},
            {"Sid": "RunResults", "Effect": "Allow", "Action": list(S3_OBJECT_ACTIONS),
             "Resource": f"{bucket_arn}/{prefix}*"},
            {"Sid": "ListRunResults", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn,
             "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}},
        ],
    }, indent=2)
