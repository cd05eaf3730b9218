"""`ernie layers build`: build the serving functions' layers, record them in the manifest, and print their sizes."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from catalog.lambda_runtime import UNZIPPED_LIMIT
from ernie.errors import ErnieError
from lambda_layers import manifest
from lambda_layers.build import build_function
from lambda_layers.built import BuiltFunction
from lambda_layers.spec import DEFAULT_OUT, FUNCTIONS_FILE, load_functions
from lambda_layers.target import Target


def build_layers(functions: list[str] | None, python_version: str, arch: str, out: Path | None,
                 console: Console) -> None:
    """Build every named function's layers (all by default) for a Lambda runtime, print their sizes, and record
    each in the manifest beside the zips (`<out>/manifest.json`); the Pulumi program reads the default `out`'s."""
    specs = load_functions()
    unknown = sorted(set(functions or ()) - set(specs))
    if unknown:
        raise ErnieError(f"--function {', '.join(unknown)}: not in {FUNCTIONS_FILE.name}; "
                         f"known: {', '.join(specs)}")
    target = Target.lambda_runtime(python_version, arch)
    out = out or DEFAULT_OUT
    for name in functions or list(specs):
        built = build_function(specs[name], target, out, log=lambda m: console.print(m, highlight=False))
        manifest.write([built], out / manifest.MANIFEST_NAME)  # each set as it is built: a later failure keeps it
        console.print(build_table(built))


def build_table(built: BuiltFunction) -> Table:
    table = Table(title=f"{built.spec.name} for {built.target.name}", title_justify="left")
    for column in ("layer", "packages", "zipped", "unzipped", "upload", "bytecode"):
        table.add_column(column, justify="right" if column in ("zipped", "unzipped") else "left")
    for layer in built.layers:
        upload = "S3 (over 50 MiB)" if layer.archive.via_s3 else "direct"
        packages = ", ".join(f"{d.name} {d.version}" for d in layer.distributions if d.version)
        table.add_row(layer.name, packages, mib(layer.archive.zipped_bytes), mib(layer.archive.unzipped_bytes),
                      upload, layer.bytecode or "none")
    table.add_row("function", ", ".join(p.name for p in built.spec.code), mib(built.code.zipped_bytes),
                  mib(built.code.unzipped_bytes), "direct", "")
    share = built.unzipped_bytes / UNZIPPED_LIMIT
    table.caption = (f"total {mib(built.unzipped_bytes)} unzipped of Lambda's {mib(UNZIPPED_LIMIT)} "
                     f"({share:.0%}); zips in {built.code.path.parent}")
    return table


def mib(size: int) -> str:
    """A size as people read it: MiB from one MiB up, else KiB."""
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
