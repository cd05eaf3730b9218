#!/usr/bin/python3
"""A stand-in `docker` for the namespace hosts (no container engine runs there).

It records each call to ~/docker-calls.jsonl, checks the arguments the docker runner composes
(`pull IMAGE`; `run --rm --name N --gpus all --network host --ipc host -v SRC:DST... -w DIR -e NAME... IMAGE CMD...`)
and runs the inner command on the host, in the working directory, with only the named variables passed:
what a container would see, given that the runner mounts every directory at the same path.
The test replaces @IMAGE@ with the image the inventory names.
"""

import json
import os
import subprocess
import sys

IMAGE = "@IMAGE@"


def fail(message: str) -> None:
    print(f"docker stand-in: {message}", file=sys.stderr)
    sys.exit(125)


def main(args: list[str]) -> int:
    with open(os.path.expanduser("~/docker-calls.jsonl"), "a") as log:
        log.write(json.dumps(args) + "\n")
    if args[:1] == ["pull"]:
        return 0 if args[1:] == [IMAGE] else fail(f"pull: unexpected {args[1:]}")
    if args[:2] != ["run", "--rm"]:
        fail(f"expected `run --rm`, got {args[:2]}")
    opts: dict[str, list[str]] = {}
    rest = args[2:]
    while rest and rest[0].startswith("-"):
        opts.setdefault(rest[0], []).append(rest[1])
        rest = rest[2:]
    if opts.get("--gpus") != ["all"] or opts.get("--network") != ["host"] or opts.get("--ipc") != ["host"]:
        fail(f"expected --gpus all --network host --ipc host, got {opts}")
    for mount in opts.get("-v", []):
        src, dst = mount.split(":")
        if src != dst or not os.path.isdir(src):
            fail(f"bad mount {mount}")
    env = {"PATH": os.environ["PATH"]}
    for name in opts.get("-e", []):
        if name not in os.environ:
            fail(f"-e {name}: not set in the caller's environment")
        env[name] = os.environ[name]
    if not rest or rest[0] != IMAGE:
        fail(f"expected image {IMAGE}, got {rest[:1]}")
    return subprocess.run(rest[1:], cwd=opts["-w"][0], env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
