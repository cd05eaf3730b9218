"""Record, from inside the container, what the docker runner gave the workload; exit with the given status."""

import argparse
import json
import os
import resource
import stat
import sys
import time

import ernie_probe  # only the derived image (the image plus requirements.txt) has it

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--marker", required=True, help="text the test expects back unchanged")
parser.add_argument("--exit-code", type=int, default=0, help="the status to exit with")
parser.add_argument("--sleep", type=float, default=0.0, help="seconds to wait before exiting")
args = parser.parse_args()
EFA = "/dev/infiniband/uverbs0"

record = {
    "marker": args.marker,
    "worker": os.environ["ERNIE_WORKER_INDEX"],
    "probe_version": ernie_probe.VERSION,
    "in_container": os.path.exists("/run/.containerenv") or os.path.exists("/.dockerenv"),
    "fi_provider": os.environ.get("FI_PROVIDER"),
    "memlock": list(resource.getrlimit(resource.RLIMIT_MEMLOCK)),
    "efa_device": os.path.exists(EFA) and stat.S_ISCHR(os.stat(EFA).st_mode),
}
with open(os.path.join(os.environ["ERNIE_OUTPUT_DIR"], "probe.json"), "w") as f:
    json.dump(record, f)
print("probe ran", flush=True)
time.sleep(args.sleep)
sys.exit(args.exit_code)
