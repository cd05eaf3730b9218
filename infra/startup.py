"""Boot scripts for the hosts, rendered by pure functions so tests can read them and run shellcheck on them.

A GPU instance's user data puts its TTL shutdown first: a host that nobody remembers stops billing by itself.
A TPU slice has no such script: it cannot stop, only be deleted, and what may delete one TPU node may delete
them all, so its teardown runs outside it (catalog/teardown.py).
"""

from __future__ import annotations

import shlex
from textwrap import dedent

GPU_DONE_FILE = "/var/lib/ernie/ready"
"""Written when user data has finished: ernie sets nothing up on the host before it exists."""
GPU_FAILED_FILE = "/var/lib/ernie/failed"
"""Written when user data failed: ernie stops waiting and shows the log's tail."""
GPU_USER_DATA_LOG = "/var/log/ernie-user-data.log"
GPU_DEADLINE_FILE = "/var/lib/ernie/deadline"
"""Epoch second at which a GPU instance terminates, written at first boot."""
# cloud-init runs what lies here at every boot (user data runs only at the first).
GPU_REARM_SCRIPT = "/var/lib/cloud/scripts/per-boot/ernie-ttl"


def render_gpu_user_data(*, region: str, registry: str, image: str, gpus: int, ttl_minutes: int) -> str:
    """User data for a GPU instance: schedule the TTL shutdown, check the GPUs, log in to ECR, pull the image.

    The instance is created with instance_initiated_shutdown_behavior="terminate", so the shutdown at
    `ttl_minutes` terminates it. The TTL is scheduled before anything that can fail. A reboot cancels a
    scheduled shutdown and user data runs only at first boot, so the deadline is fixed in a file at first boot
    and a cloud-init per-boot script schedules the shutdown for the time left, at this boot and every later one.
    """
    return dedent(f"""\
        #!/bin/bash
        # ernie: terminate this instance {ttl_minutes} minutes after first boot (ernie:ttlMinutes), check its GPUs
        # and pull the training image, so the first run starts without a download.
        set -euo pipefail
        exec > >(tee -a {GPU_USER_DATA_LOG}) 2>&1
        mkdir -p "$(dirname {GPU_FAILED_FILE})"
        # Whatever fails below, ernie learns of it at once (it waits for {GPU_DONE_FILE} otherwise).
        trap 'echo "ernie: user data failed at line ${{LINENO}}" >&2; date -u > {GPU_FAILED_FILE}' ERR

        readonly TTL_MINUTES={int(ttl_minutes)}
        readonly REGION={shlex.quote(region)}
        readonly REGISTRY={shlex.quote(registry)}
        readonly IMAGE={shlex.quote(image)}
        readonly EXPECTED_GPUS={int(gpus)}

        readonly DEADLINE_FILE={GPU_DEADLINE_FILE}
        readonly REARM_SCRIPT={GPU_REARM_SCRIPT}

        mkdir -p "$(dirname "${{DEADLINE_FILE}}")" "$(dirname "${{REARM_SCRIPT}}")"
        if [[ ! -s "${{DEADLINE_FILE}}" ]]; then
          echo "$(( $(date +%s) + TTL_MINUTES * 60 ))" > "${{DEADLINE_FILE}}"
        fi
        cat > "${{REARM_SCRIPT}}" <<'REARM'
        #!/bin/bash
        # ernie: schedule the TTL shutdown for the minutes left until the first boot's deadline.
        set -euo pipefail
        remaining=$(( $(cat {GPU_DEADLINE_FILE}) - $(date +%s) ))
        minutes=$(( (remaining + 59) / 60 ))
        if (( minutes < 0 )); then
          minutes=0
        fi
        # instance_initiated_shutdown_behavior=terminate turns this shutdown into termination.
        shutdown -h "+${{minutes}}" "ernie: ttlMinutes reached, terminating"
        REARM
        chmod 0755 "${{REARM_SCRIPT}}"
        "${{REARM_SCRIPT}}"

        found=$(nvidia-smi --list-gpus | wc -l)
        if (( found != EXPECTED_GPUS )); then
          echo "ernie: expected ${{EXPECTED_GPUS}} GPUs, nvidia-smi sees ${{found}}" >&2
          exit 1
        fi
        nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv

        aws ecr get-login-password --region "${{REGION}}" \\
          | docker login --username AWS --password-stdin "${{REGISTRY}}"
        docker pull "${{IMAGE}}"
        echo "${{IMAGE}}" > {GPU_DONE_FILE}
        """)
