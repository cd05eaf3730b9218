"""The Lambda layer build tool: a function's layer set (workloads/serving/layers.toml) into deterministic zips
for a Lambda runtime, checked against Lambda's limits, and a manifest of what was built.

`ernie layers build` drives it; the Pulumi program (infra/) reads only the manifest and builds nothing.

    errors     LayerError and its kinds
    target     the Lambda runtime a build is for (Python version, architecture, glibc)
    spec       layers.toml read into FunctionSpec/LayerSpec, and the digest a build is stale against
    build      pip for the target, the layer cache, build scripts: build_function()
    tree       what is done to an installed tree: remove distributions, slim, strip, bytecode, sizes
    archive    reproducible zips (write_zip) and what Lambda counts of one (Archive)
    built      what a build produced: BuiltFunction, BuiltLayer, Distribution
    checks     complete (every Requires-Dist held) and budget (Lambda's unzipped limit)
    manifest   manifest.json beside the zips: written by a build, read by the Pulumi program
    harness    the zips unpacked as Lambda unpacks them, a handler run under `python -I -S`

It imports neither infra nor ernie (of ours, catalog only: the error type, Lambda's runtimes and limits, and the
schema library layers.toml is read through).
"""
