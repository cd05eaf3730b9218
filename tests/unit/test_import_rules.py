"""The dependency rules between the top-level parts, checked on the source (issue 18): each part may import only
what is below it, so the Pulumi program and the policy pack never pull in the driver, and the workloads ship alone.

    catalog/     pure data and contracts: none of infra, ernie, policy, workloads, tests, testing, nor pulumi
    policy/      catalog only (plus the standard library and third-party packages)
    infra/       no ernie, policy, tests, testing; of lambda_layers/ only its reading side (the manifest and what it
                 returns), never build, tree or harness: the program reads what `ernie layers build` made
    lambda_layers/  neither infra nor ernie (nor policy, tests, testing, pulumi): catalog only
    workloads/   none of ernie, infra, catalog, policy, tests, testing
    benchmarks/  no tests (shared test equipment lives in testing/)
    ernie/       infra and pulumi only in check.py, mocks.py and pulumi_cli.py (the Pulumi seam), and the named
                 exceptions below

Every import is read with `ast`, wherever it stands (lazy imports in functions count too). A named exception
that no longer matches an import fails as well, so the list cannot outlive its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARTS = ("catalog", "policy", "infra", "lambda_layers", "ernie", "workloads", "benchmarks")
TESTS_MODULES = frozenset(p.stem for p in (REPO / "tests").rglob("*.py"))
"""tests/ is no package: its modules import by bare name once their folder is on sys.path, so those names count."""

FORBIDDEN: dict[str, frozenset[str]] = {
    "catalog": frozenset({"infra", "ernie", "policy", "workloads", "tests", "testing", "pulumi", "lambda_layers"}),
    "policy": frozenset({"infra", "ernie", "workloads", "benchmarks", "tests", "testing", "lambda_layers"}),
    "infra": frozenset({"ernie", "policy", "tests", "testing", "lambda_layers.build", "lambda_layers.tree",
                        "lambda_layers.harness"}),
    "lambda_layers": frozenset({"infra", "ernie", "policy", "workloads", "tests", "testing", "pulumi"}),
    "workloads": frozenset({"ernie", "infra", "catalog", "policy", "tests", "testing", "lambda_layers"}),
    "benchmarks": frozenset({"tests"}),
    "ernie": frozenset({"infra", "pulumi", "tests", "testing"}),
}
PULUMI_SEAM = frozenset({"ernie/check.py", "ernie/mocks.py", "ernie/pulumi_cli.py"})
"""The driver's modules that run the Pulumi program (under mocks, or through the CLI): infra and pulumi allowed."""

EXCEPTIONS: dict[tuple[str, str], str] = {
    # The pack reads the running stack's ceiling with the program's own config parser, so the guardrail and
    # `pulumi up` cannot read ernie:maxUsdPerHour differently; infra.config imports pulumi and catalog only.
    ("policy/pack.py", "infra.config"): "the stack's config parser",
}


def _top(name: str) -> str:
    top = name.split(".", 1)[0]
    return "pulumi" if top.startswith("pulumi") else top  # pulumi_aws, pulumi_policy, ... are Pulumi too


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of everything the file imports absolutely: `from a.b import c` gives a.b.c, so an
    exception can name a module imported as a name (`from infra import layers`) and no other name rides on it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _excepted(rel: str, name: str) -> tuple[str, str] | None:
    return next(((f, m) for f, m in EXCEPTIONS if f == rel and (name == m or name.startswith(m + "."))), None)


def _forbidden(rel: str, part: str, name: str, beside: frozenset[str]) -> bool:
    top = _top(name)
    if rel in PULUMI_SEAM and top in ("infra", "pulumi"):
        return False
    if top in TESTS_MODULES and top not in beside and "tests" in FORBIDDEN[part]:
        return True  # a bare tests/ module, reached by putting tests/ on sys.path
    # A rule may name a part's module (lambda_layers.build): it covers the module and what is imported from it.
    return top in FORBIDDEN[part] or any(name == m or name.startswith(m + ".") for m in FORBIDDEN[part] if "." in m)


def violations() -> tuple[list[str], set[tuple[str, str]]]:
    """Offending `file:line: name (rule)` lines, and the exceptions that matched an import."""
    found, used = [], set()
    for part in PARTS:
        for path in sorted((REPO / part).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            beside = frozenset(p.stem for p in path.parent.glob("*.py"))
            for line, name in imports(path):
                if exception := _excepted(rel, name):
                    used.add(exception)
                elif _forbidden(rel, part, name, beside):
                    found.append(f"{rel}:{line}: imports {name}; {part}/ may not import "
                                 f"{', '.join(sorted(FORBIDDEN[part]))}")
    return found, used


def test_every_part_imports_only_what_is_below_it() -> None:
    found, _ = violations()
    assert not found, "dependency rules broken (tests/unit/test_import_rules.py says why):\n" + "\n".join(found)


def test_every_named_exception_is_still_needed() -> None:
    _, used = violations()
    stale = sorted(set(EXCEPTIONS) - used)
    assert not stale, f"exceptions no import needs any more, remove them from EXCEPTIONS: {stale}"


def test_the_check_sees_a_broken_rule(tmp_path: Path) -> None:
    """A planted import in each forbidden shape is found (the check reads what it claims to read)."""
    planted = tmp_path / "planted.py"
    planted.write_text("import os\n\ndef f():\n    from ernie.errors import ErnieError\n"
                       "import pulumi_aws\nfrom infra import layers\nimport sshhosts\n")
    got = imports(planted)
    assert (4, "ernie.errors.ErnieError") in got and (5, "pulumi_aws") in got and (6, "infra.layers") in got
    assert _excepted("policy/pack.py", "infra.config.parse") and not _excepted("policy/pack.py", "infra.naming")
    assert _forbidden("catalog/x.py", "catalog", "ernie.errors.ErnieError", frozenset())
    assert _forbidden("catalog/x.py", "catalog", "pulumi_aws", frozenset())
    assert _forbidden("ernie/run.py", "ernie", "infra.layers", frozenset())
    assert not _forbidden("ernie/check.py", "ernie", "infra.config", frozenset())
    assert _forbidden("workloads/bert/x.py", "workloads", "catalog.pricing", frozenset())
    assert _forbidden("benchmarks/x.py", "benchmarks", "conftest", frozenset())  # a tests/ module by bare name
    assert not _forbidden("benchmarks/x.py", "benchmarks", "machine", frozenset({"machine"}))
    assert not _forbidden("policy/rules.py", "policy", "catalog.pricing", frozenset())
    assert _forbidden("lambda_layers/x.py", "lambda_layers", "infra.config", frozenset())
    assert _forbidden("lambda_layers/x.py", "lambda_layers", "ernie.errors.ErnieError", frozenset())
    assert not _forbidden("lambda_layers/x.py", "lambda_layers", "catalog.errors.ErnieError", frozenset())
    assert _forbidden("infra/x.py", "infra", "lambda_layers.build.build_function", frozenset())
    assert _forbidden("infra/x.py", "infra", "lambda_layers.harness", frozenset())
    assert not _forbidden("infra/x.py", "infra", "lambda_layers.manifest", frozenset())
    assert not _forbidden("infra/x.py", "infra", "lambda_layers.built.BuiltFunction", frozenset())


EQUIPMENT_FIXTURES = frozenset({"ssh_hosts", "container_hosts"})
"""testing/sshhosts.py's fixtures: namespace hosts, sshd, podman and a registry."""


def lane_violations(unit_dir: Path) -> list[str]:
    """tests/unit stays pure: no test there takes real equipment (testing.sshhosts, or its fixtures)."""
    found = []
    for path in sorted(unit_dir.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        found += [f"{path.name}:{line}: imports {name}" for line, name in imports(path)
                  if name.startswith("testing.sshhosts")]
        found += [f"{path.name}:{node.lineno}: {node.name} takes {arg.arg}" for node in ast.walk(tree)
                  if isinstance(node, ast.FunctionDef) for arg in node.args.args if arg.arg in EQUIPMENT_FIXTURES]
    return found


def test_the_fast_lane_takes_no_equipment(tmp_path: Path) -> None:
    found = lane_violations(REPO / "tests" / "unit")
    assert not found, "tests/unit must stay pure (move these to tests/integration):\n" + "\n".join(found)
    (tmp_path / "test_x.py").write_text("from testing.sshhosts import SshHosts\n\ndef test_a(ssh_hosts):\n    pass\n")
    assert lane_violations(tmp_path) == ["test_x.py:1: imports testing.sshhosts.SshHosts",
                                         "test_x.py:3: test_a takes ssh_hosts"]
