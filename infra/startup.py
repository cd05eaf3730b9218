"""Boot scripts for the hosts, rendered by pure functions so tests can read them and run shellcheck on them.

Both put the TTL teardown first: a host that nobody remembers stops billing by itself.
"""

from __future__ import annotations

import shlex
from textwrap import dedent

TPU_API = "https://tpu.googleapis.com/v2"
GPU_DEADLINE_FILE = "/var/lib/ernie/deadline"
"""Epoch second at which a GPU instance terminates, written at first boot."""
# cloud-init runs what lies here at every boot (user data runs only at the first).
GPU_REARM_SCRIPT = "/var/lib/cloud/scripts/per-boot/ernie-ttl"


def tpu_node_url(project: str, zone: str, node: str) -> str:
    """The TPU API URL of one node, which its startup script DELETEs at the deadline."""
    return f"{TPU_API}/projects/{project}/locations/{zone}/nodes/{node}"


def render_tpu_startup_script(node_url: str, ttl_minutes: int) -> str:
    """Startup script for every worker of a TPU VM slice: delete the whole node once `ttl_minutes` have passed.

    A TPU VM cannot be stopped, only deleted, so the script deletes its own node through the TPU API with the
    node's service account (which may get and delete TPU nodes, nothing more). The deadline is fixed at first
    boot, so a reboot for host maintenance does not extend it.
    """
    return dedent(f"""\
        #!/bin/bash
        # ernie: delete this TPU node {ttl_minutes} minutes after first boot (ernie:ttlMinutes),
        # so a forgotten slice stops billing.
        set -euo pipefail

        readonly TTL_MINUTES={int(ttl_minutes)}
        readonly NODE_URL={shlex.quote(node_url)}
        readonly STATE_DIR=/var/lib/ernie
        readonly DEADLINE_FILE="${{STATE_DIR}}/deadline"

        mkdir -p "${{STATE_DIR}}"
        if [[ ! -s "${{DEADLINE_FILE}}" ]]; then
          echo "$(( $(date +%s) + TTL_MINUTES * 60 ))" > "${{DEADLINE_FILE}}"
        fi

        cat > /usr/local/sbin/ernie-teardown <<'TEARDOWN'
        #!/bin/bash
        # Delete this TPU node through the TPU API, as the node's own service account.
        set -euo pipefail
        node_url="$1"
        token=$(curl -sSf -H 'Metadata-Flavor: Google' \\
          'http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token' \\
          | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
        logger -t ernie "ttlMinutes reached: deleting ${{node_url}}"
        curl -sSf -X DELETE -H "Authorization: Bearer ${{token}}" "${{node_url}}"
        TEARDOWN
        chmod 0755 /usr/local/sbin/ernie-teardown

        remaining=$(( $(cat "${{DEADLINE_FILE}}") - $(date +%s) ))
        if (( remaining <= 0 )); then
          exec /usr/local/sbin/ernie-teardown "${{NODE_URL}}"
        fi
        systemd-run --unit=ernie-ttl --description='ernie: delete this TPU node at ttlMinutes' \\
          --on-active="${{remaining}}s" /usr/local/sbin/ernie-teardown "${{NODE_URL}}"
        """)


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
        exec > >(tee -a /var/log/ernie-user-data.log) 2>&1

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
        mkdir -p /var/lib/ernie
        echo "${{IMAGE}}" > /var/lib/ernie/ready
        """)
