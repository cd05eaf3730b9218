"""The one seam that drives the Pulumi CLI: `refresh`, `up`, `stack output inventory`, `destroy` (and, for the
cells of `ernie compare`, `stack ls` and `stack init`; to find what a refresh left unrecoverable, `stack export`).

Nothing else in ernie runs `pulumi`. The executable is `$ERNIE_PULUMI` if set, else `pulumi` on PATH,
so a test (or a user with a wrapper) can stand in for it. Commands run from the project directory
(the one holding Pulumi.yaml) and stream their output to the terminal, except `stack output`, whose
JSON holds secrets and is parsed, never printed.

Ctrl-C must never leave resources half-made and unknown to the state: `up` and `destroy` run in their
own process group (the terminal's Ctrl-C reaches ernie only), and ernie forwards one SIGINT, which
pulumi takes as "cancel gracefully": it finishes the operations in flight and saves its state. A second
Ctrl-C sends SIGTERM. pulumi is never killed: ernie waits for it to exit before going on (to destroy).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ernie.errors import ErnieError

PROJECT_DIR = Path(__file__).resolve().parents[1]
# Resource states a refresh records that no `up` repairs by itself: the resource must be replaced.
UNRECOVERABLE_STATES: dict[str, tuple[str, ...]] = {
    "gcp:tpu/v2Vm:V2Vm": ("PREEMPTED", "TERMINATED"),
}
INSTALL_HINT = (
    "the Pulumi CLI is not installed (or not on PATH): install it with "
    "`curl -fsSL https://get.pulumi.com | sh` (see https://www.pulumi.com/docs/install/), "
    "or point $ERNIE_PULUMI at the executable"
)


@dataclass
class PulumiCli:
    """Runs `pulumi` for one project directory. Each method raises ErnieError when the CLI fails."""

    project_dir: Path = PROJECT_DIR
    executable: str = field(default_factory=lambda: os.environ.get("ERNIE_PULUMI", "pulumi"))
    config_file: Path | None = None
    """`up` and `destroy` read the stack's config from this file instead of Pulumi.<stack>.yaml (`ernie compare`
    keeps each cell's config beside its results)."""

    def _argv(self, *args: str) -> list[str]:
        exe = shutil.which(self.executable)
        if exe is None:
            raise ErnieError(INSTALL_HINT)
        return [exe, *args, "--cwd", str(self.project_dir), "--non-interactive"]

    def _config(self) -> list[str]:
        # Absolute: pulumi resolves a relative path against --cwd, the project, not where ernie was started.
        return ["--config-file", str(self.config_file.resolve())] if self.config_file is not None else []

    def up(self, stack: str, replace: Sequence[str] = ()) -> None:
        """`pulumi up --yes --skip-preview -s STACK` (`--replace URN` for each of `replace`), output to the
        terminal."""
        self.build_layers(stack)
        replacing = [arg for urn in replace for arg in ("--replace", urn)]
        self._run(self._argv("up", "--yes", "--skip-preview", "-s", stack, *replacing, *self._config()),
                  f"pulumi up -s {stack}")

    def build_layers(self, stack: str) -> None:
        """Before `up`: the Lambda layers the stack's config serves, built where the manifest of the last
        `ernie layers build` lacks them or they are stale (the program reads them and builds nothing).

        A config the program would refuse is left to `up`, which says what is wrong with it."""
        from infra.config import ConfigError, parse
        from infra.serving_layers import MANIFEST, wanted
        from lambda_layers import manifest
        from lambda_layers.errors import ManifestError
        from lambda_layers.target import Target

        path = self.config_file or self.project_dir / f"Pulumi.{stack}.yaml"
        try:
            values = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
            # As Pulumi hands them to the program; a secret (secure:) is never a serving setting.
            raw = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in values.items()
                   if not (isinstance(v, dict) and set(v) == {"secure"})}
            serving = parse(raw, stack).serving
        except (OSError, AttributeError, yaml.YAMLError, ConfigError):
            return
        if serving is None:
            return
        from rich.console import Console

        from ernie.serving.build import build_layers

        target = Target.lambda_runtime(serving.python_version, serving.architecture)
        for function in wanted(serving):
            try:
                manifest.load(function.function_set, target, MANIFEST)
            except ManifestError:
                build_layers([function.function_set], target.python_version, target.arch, MANIFEST.parent, Console())

    def refresh(self, stack: str) -> None:
        """`pulumi refresh --yes --skip-preview -s STACK`: the state learns what the cloud deleted behind its back
        (a TTL teardown, a reclaimed Spot instance), so the next `up` makes it again."""
        self._run(self._argv("refresh", "--yes", "--skip-preview", "-s", stack, *self._config()),
                  f"pulumi refresh -s {stack}")

    def unrecoverable(self, stack: str) -> list[str]:
        """URNs of the stack's resources that exist but cannot come back by themselves (`pulumi stack export`
        after a refresh): a preempted Spot TPU node stays PREEMPTED until deleted, and `up` sees no difference."""
        proc = subprocess.run(self._argv("stack", "export", "-s", stack), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise ErnieError(f"`pulumi stack export -s {stack}` failed ({proc.returncode}): "
                             f"{proc.stderr.strip()[-500:] or 'no message'}")
        try:
            resources = json.loads(proc.stdout or "{}").get("deployment", {}).get("resources") or []
            return [r["urn"] for r in resources
                    if (r.get("outputs") or {}).get("state") in UNRECOVERABLE_STATES.get(r.get("type"), ())]
        except (json.JSONDecodeError, AttributeError, TypeError, KeyError) as exc:
            raise ErnieError(f"`pulumi stack export -s {stack}` is not a deployment ({exc})") from exc

    def bring_up(self, stack: str) -> list[str]:
        """Refresh, then `up`, replacing what cannot come back by itself: the hosts are all there afterwards
        (after a TTL delete, a reclaimed Spot instance or a preempted TPU node). Returns the URNs replaced."""
        self.refresh(stack)
        replace = self.unrecoverable(stack)
        self.up(stack, replace=replace)
        return replace

    def destroy(self, stack: str) -> None:
        """`pulumi destroy --yes -s STACK`, output to the terminal."""
        self._run(self._argv("destroy", "--yes", "--skip-preview", "-s", stack, *self._config()),
                  f"pulumi destroy -s {stack}")

    def stacks(self) -> set[str]:
        """The names of the project's stacks in the current backend (`pulumi stack ls --json`)."""
        proc = subprocess.run(self._argv("stack", "ls", "--json"), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise ErnieError(f"`pulumi stack ls` failed ({proc.returncode}): "
                             f"{proc.stderr.strip()[-500:] or 'no message'}; are you logged in (`pulumi login`)?")
        try:
            listed = json.loads(proc.stdout or "[]")
            # A Pulumi Cloud backend may qualify a name (org/project/stack); a self-managed one does not.
            return {str(s["name"]).rsplit("/", 1)[-1] for s in listed}
        except (json.JSONDecodeError, TypeError, KeyError) as exc:
            raise ErnieError(f"`pulumi stack ls --json` did not list stacks ({exc})") from exc

    def init_stack(self, stack: str) -> None:
        """`pulumi stack init STACK --no-select`: a new, empty stack; the selected stack stays as it was."""
        self._run(self._argv("stack", "init", stack, "--no-select"), f"pulumi stack init {stack}")

    def inventory(self, stack: str) -> dict[str, Any]:
        """The stack's `inventory` output, secrets included (kept in memory only)."""
        argv = self._argv("stack", "output", "inventory", "--json", "--show-secrets", "-s", stack)
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise ErnieError(
                f"`pulumi stack output inventory -s {stack}` failed ({proc.returncode}): "
                f"{proc.stderr.strip()[-500:] or 'no message'}; is the stack up (`pulumi up -s {stack}`)?")
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise ErnieError(f"stack {stack}: the inventory output is not JSON ({exc.msg})") from exc

    @staticmethod
    def _run(argv: list[str], what: str) -> None:
        """Run pulumi to its end; a KeyboardInterrupt meanwhile is passed on to it, then re-raised once it exits."""
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, process_group=0)
        interrupts = 0
        while True:
            try:
                returncode = proc.wait()
                break
            except KeyboardInterrupt:
                interrupts += 1
                if interrupts <= 2:  # SIGINT: cancel gracefully; SIGTERM: stop now (pulumi still saves state)
                    proc.send_signal(signal.SIGINT if interrupts == 1 else signal.SIGTERM)
                print(f"waiting for `{what}` to stop cleanly (it is never killed: its state must stay consistent)",
                      file=sys.stderr, flush=True)
        if interrupts:
            raise KeyboardInterrupt
        if returncode != 0:
            raise ErnieError(f"`{what}` failed with exit status {returncode} (its output is above)")
