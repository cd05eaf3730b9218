"""LambdaService: one Lambda function with its layers behind an HTTP API, throttled, logging to its own group.

The layers and the code zip come built and checked by `ernie layers build` (lambda_layers/), read from its
manifest (infra/serving_layers.py); this component only publishes them. Instantiate it once per function
(the tabular model, an embedding model...): every name it makes carries the component's name and the
function's.

The HTTP API is what the console's quick create makes (an `AWS_PROXY` integration with payload format 2.0,
a `$default` route and an auto-deployed `$default` stage), spelled out because quick create's implicit stage
cannot carry the throttling limit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.aws_storage import private_bucket
from infra.config import SERVING_DEFAULT_RESERVED_CONCURRENCY
from infra.grants import render_assume_role_policy
from infra.naming import lambda_function_name, lambda_stack_part
from lambda_layers.built import BuiltFunction, BuiltLayer

LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")


@dataclass(frozen=True)
class LambdaServiceArgs:
    """Everything a LambdaService needs; validated by config.py and built by `ernie layers build` before it gets here."""

    function: BuiltFunction
    """The code zip and the layers, in order; its target gives the runtime and the architecture."""
    stack: str
    """Stack name, part of every AWS name (the sweep finds layers by `ernie-<stack>-...`)."""
    memory_mb: int
    """Memory of the function, and with it its CPU share."""
    timeout_seconds: int
    """How long one invocation may run (at most the HTTP API's 30 s)."""
    log_retention_days: int
    """How long the function's log group keeps its logs."""
    throttle_rate: int
    """Steady requests per second the API lets through; more get 429."""
    throttle_burst: int
    """Requests the API lets through at once."""
    ttl_minutes: int
    """Recorded in each layer's description (`ernie-ttl=`), which is all a layer version can carry."""
    tags: Mapping[str, str]
    """Applied to every resource that takes tags (ernie-stack, ernie-ttl)."""
    environment: Mapping[str, str] = field(default_factory=dict)
    """Extra environment variables of the function."""
    reserved_concurrency: int = SERVING_DEFAULT_RESERVED_CONCURRENCY
    """Instances that may run at once: the bound on what a flood of requests can cost."""


def render_logs_policy(log_group_arn: str) -> str:
    """Inline policy of the function's role: write to its own log group, nothing else."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "OwnLogGroup", "Effect": "Allow", "Action": list(LOG_ACTIONS),
                       "Resource": f"{log_group_arn}:*"}],
    }, indent=2)


def lambda_layer_name(stack: str, function: str, layer: str) -> str:
    """`ernie-<stack>-<function>_<layer>`: dashes only between the three parts, as the sweep parses them."""
    return f"ernie-{lambda_stack_part(stack)}-{function.replace('-', '_')}_{layer.replace('-', '_')}"


class LambdaService(pulumi.ComponentResource):
    """A Lambda function with its layers, a role that may only log, a log group with retention, an HTTP API."""

    url: pulumi.Output[str]
    """HTTPS endpoint of the API (its `$default` stage)."""
    function_name: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    layer_arns: pulumi.Output[list[str]]
    """Layer version ARNs in the order Lambda stacks them."""

    def __init__(self, name: str, args: LambdaServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ernie:aws:LambdaService", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        built = args.function
        tags = dict(args.tags)
        function_name = lambda_function_name(args.stack, built.spec.name)

        log_group = aws.cloudwatch.LogGroup(f"{name}-logs", name=f"/aws/lambda/{function_name}",
                                            retention_in_days=args.log_retention_days, tags=tags, opts=child)
        role = aws.iam.Role(f"{name}-role", assume_role_policy=render_assume_role_policy("lambda.amazonaws.com"),
                            description=f"ernie serving function {function_name}: write its own logs",
                            tags=tags, opts=child)
        logs_policy = aws.iam.RolePolicy(f"{name}-logs-policy", role=role.id,
                                         policy=log_group.arn.apply(render_logs_policy), opts=child)

        # Private, encrypted, TLS-only bucket for layer zips over Lambda's 50 MB direct-upload limit.
        bucket = (private_bucket(f"{name}-layers", tags, self) if any(l.archive.via_s3 for l in built.layers)
                  else None)
        layers = [self._layer(name, args, layer, bucket, child) for layer in built.layers]

        function = aws.lambda_.Function(
            f"{name}-function",
            name=function_name,
            description=built.spec.description,
            role=role.arn,
            runtime=built.target.runtime,
            architectures=[built.target.arch],
            handler=built.spec.handler,
            code=pulumi.FileArchive(str(built.code.path)),
            source_code_hash=built.code.source_code_hash,
            layers=[layer.arn for layer in layers],
            memory_size=args.memory_mb,
            timeout=args.timeout_seconds,
            reserved_concurrent_executions=args.reserved_concurrency,
            environment={"variables": dict(args.environment)} if args.environment else None,
            tags=tags,
            # The log group first, or Lambda makes one itself, kept forever.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, logs_policy]),
        )

        api = aws.apigatewayv2.Api(f"{name}-api", protocol_type="HTTP", description=built.spec.description,
                                   tags=tags, opts=child)
        integration = aws.apigatewayv2.Integration(f"{name}-integration", api_id=api.id,
                                                   integration_type="AWS_PROXY", integration_uri=function.arn,
                                                   payload_format_version="2.0", opts=child)
        aws.apigatewayv2.Route(f"{name}-route", api_id=api.id, route_key="$default",
                               target=pulumi.Output.concat("integrations/", integration.id), opts=child)
        aws.apigatewayv2.Stage(f"{name}-stage", api_id=api.id, name="$default", auto_deploy=True,
                               default_route_settings={"throttling_rate_limit": args.throttle_rate,
                                                       "throttling_burst_limit": args.throttle_burst},
                               tags=tags, opts=child)
        # Only this API, any stage and route, may invoke the function.
        aws.lambda_.Permission(f"{name}-invoke", action="lambda:InvokeFunction", function=function.name,
                               principal="apigateway.amazonaws.com",
                               source_arn=pulumi.Output.concat(api.execution_arn, "/*/*"), opts=child)

        self.url = api.api_endpoint
        self.function_name = function.name
        self.function_arn = function.arn
        self.layer_arns = pulumi.Output.all(*[layer.arn for layer in layers])
        self.register_outputs({"url": self.url, "function_name": self.function_name,
                               "function_arn": self.function_arn, "layer_arns": self.layer_arns})

    @staticmethod
    def _layer(name: str, args: LambdaServiceArgs, layer: BuiltLayer, bucket: aws.s3.Bucket | None,
               child: pulumi.ResourceOptions) -> aws.lambda_.LayerVersion:
        built = args.function
        if layer.archive.via_s3:
            if bucket is None:  # __init__ makes the bucket whenever a layer needs it
                raise ValueError(f"layer {layer.name!r} is over Lambda's direct-upload limit and needs the layers "
                                 "bucket")
            # Keyed by content: an unchanged zip is the same object, and the layer is not republished.
            upload = aws.s3.BucketObjectv2(f"{name}-{layer.name}-zip", bucket=bucket.id,
                                           key=f"layers/{built.spec.name}/{layer.name}-{layer.archive.sha256}.zip",
                                           source=pulumi.FileAsset(str(layer.archive.path)), tags=args.tags,
                                           opts=child)
            code: dict[str, pulumi.Input[str]] = {"s3_bucket": bucket.id, "s3_key": upload.key}
        else:
            code = {"code": pulumi.FileArchive(str(layer.archive.path))}
        packages = ", ".join(f"{d.name} {d.version}" for d in layer.distributions)
        return aws.lambda_.LayerVersion(
            f"{name}-{layer.name}",
            layer_name=lambda_layer_name(args.stack, built.spec.name, layer.name),
            description=f"{packages} ernie-ttl={args.ttl_minutes}"[-256:],
            compatible_runtimes=[built.target.runtime],
            compatible_architectures=[built.target.arch],
            source_code_hash=layer.archive.source_code_hash,
            opts=child,
            **code,
        )
