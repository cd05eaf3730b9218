"""A TPU slice's TTL teardown, sent from outside the slice: the request a Cloud Scheduler job makes, and when.

Whoever holds `tpu.nodes.delete` may delete every TPU node in the project: a node has no IAM policy of its own,
and Cloud TPU is not among the services that give IAM Conditions a resource name to test
(cloud.google.com/iam/docs/conditions-resource-attributes), so no condition narrows the grant to one node.
A host holding it would hand it to every workload on the host through the metadata server. So no host holds
it: a teardown service account does, and the only thing that runs as it is a Cloud Workflow whose source is
rendered here: DELETE this slice's own node, then GET it until 404, with capped backoff, up to a deadline. A
Cloud Scheduler job starts that workflow at the TTL, signed in as a caller account that may only invoke
workflows. These pure functions render the workflow, the job's target and its schedule; infra/gcp_tpu.py
declares them and policy/rules.py checks the bound.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

TPU_API = "https://tpu.googleapis.com/v2"
TEARDOWN_INVOKER_ROLE = "roles/workflows.invoker"
TEARDOWN_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SCHEDULE_TIME_ZONE = "Etc/UTC"
# Cloud Scheduler does not run in every TPU region (us-central2 is TPU-only); the job only sends one HTTPS
# request, so it runs in a region of the slice's continent that has it.
SCHEDULER_REGIONS = {"us": "us-central1", "europe": "europe-west1", "asia": "asia-northeast1"}
DEFAULT_SCHEDULER_REGION = "us-central1"


def tpu_node_url(project: str, zone: str, node: str) -> str:
    """The TPU API URL of one node: what the teardown job DELETEs."""
    return f"{TPU_API}/projects/{project}/locations/{zone}/nodes/{node}"


def scheduler_region(region: str) -> str:
    """Where the slice's teardown job runs: a Cloud Scheduler region on the slice's continent."""
    return SCHEDULER_REGIONS.get(region.split("-", 1)[0], DEFAULT_SCHEDULER_REGION)


def teardown_deadline(start: datetime, ttl_minutes: int) -> datetime:
    """`ttl_minutes` after `start`, rounded up to the whole minute a cron schedule can name (UTC)."""
    end = start.astimezone(UTC) + timedelta(minutes=ttl_minutes)
    return datetime.fromtimestamp(math.ceil(end.timestamp() / 60) * 60, UTC)


def render_teardown_schedule(deadline: datetime) -> str:
    """The cron schedule (in SCHEDULE_TIME_ZONE) firing at `deadline`'s minute. Cron has no year: a job still
    there a year later fires again, at a node long gone (a 404), until `pulumi destroy` removes it."""
    at = deadline.astimezone(UTC)
    return f"{at.minute} {at.hour} {at.day} {at.month} *"


# The workflow the scheduler job starts: DELETE the node, then GET it until the TPU API answers 404, sleeping
# with capped exponential backoff between tries, and giving up (failing the execution) only at the deadline.
# A single DELETE can be accepted and its operation fail, or the API can be down longer than Scheduler's
# retries: the loop covers both (issue 14, defect 12).
WORKFLOW_BACKOFF_S = (60, 600)
"""First and longest sleep between tries, in seconds; each sleep doubles the last."""
WORKFLOW_DEADLINE_S = 24 * 3600
"""After this long without a 404 the execution fails (and shows as failed in Cloud Logging)."""
WORKFLOW_ENDPOINT = "https://workflowexecutions.googleapis.com/v1"


def render_teardown_workflow(node_url: str) -> str:
    """The Cloud Workflows source (YAML) that deletes `node_url` and waits until it is gone."""
    url = json.dumps(node_url)  # a JSON string is a YAML scalar: no quoting surprise from the URL
    first, cap = WORKFLOW_BACKOFF_S
    return f"""main:
  steps:
    - init:
        assign:
          - node: {url}
          - delay: {first}
          - deadline: ${{sys.now() + {WORKFLOW_DEADLINE_S}}}
    - try_delete:
        try:
          steps:
            - delete:
                call: http.delete
                args:
                  url: ${{node}}
                  auth:
                    type: OAuth2
            - check:
                call: http.get
                args:
                  url: ${{node}}
                  auth:
                    type: OAuth2
        except:
          as: e
          steps:
            - gone:
                switch:
                  - condition: ${{"HttpError" in e.tags and map.get(e, "code") == 404}}
                    return: "deleted"
    - give_up:
        switch:
          - condition: ${{sys.now() > deadline}}
            raise: ${{"node " + node + " still there after {WORKFLOW_DEADLINE_S} s"}}
    - wait:
        call: sys.sleep
        args:
          seconds: ${{delay}}
    - backoff:
        assign:
          - delay: ${{math.min(delay * 2, {cap})}}
        next: try_delete
"""


def workflow_executions_url(project: str, region: str, workflow: str) -> str:
    """What the scheduler job POSTs to start one execution of the named workflow."""
    return f"{WORKFLOW_ENDPOINT}/projects/{project}/locations/{region}/workflows/{workflow}/executions"
