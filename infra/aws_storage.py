"""The one way infra/ declares an S3 bucket: private, encrypted at rest, and refusing requests without TLS."""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from infra.grants import render_tls_only_bucket_policy


def private_bucket(name: str, tags: Mapping[str, str], parent: pulumi.Resource) -> aws.s3.Bucket:
    """An S3 bucket `name` with its guards, each a child of `parent` named after the bucket: `-private` (public
    access blocked), `-sse` (KMS encryption by default) and `-tls` (a policy denying every request without TLS).

    A plain function, not a component, so the bucket keeps the URN it had before the TLS policy joined it.
    """
    child = pulumi.ResourceOptions(parent=parent)
    bucket = aws.s3.Bucket(name, force_destroy=True, tags=dict(tags), opts=child)
    block = aws.s3.BucketPublicAccessBlock(f"{name}-private", bucket=bucket.id, block_public_acls=True,
                                           block_public_policy=True, ignore_public_acls=True,
                                           restrict_public_buckets=True, opts=child)
    aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-sse", bucket=bucket.id,
        rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms"},
                "bucket_key_enabled": True}], opts=child)
    # After the public access block: S3 refuses concurrent changes to one bucket's access settings.
    aws.s3.BucketPolicy(f"{name}-tls", bucket=bucket.id, policy=bucket.arn.apply(render_tls_only_bucket_policy),
                        opts=pulumi.ResourceOptions(parent=parent, depends_on=[block]))
    return bucket
