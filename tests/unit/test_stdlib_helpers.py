"""What the standard library (or `packaging`, already locked) does is not written again by hand (issue 18): a
file's sha256 is hashlib.file_digest (read from the source with `ast`, so a new hand-rolled loop fails here), the
local API Gateway's query string is urllib.parse's, and the layer builder reads dist-info with importlib.metadata
and names distributions with packaging.utils.canonicalize_name."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from ernie.remote.collect import sha256_file

REPO = Path(__file__).resolve().parents[2]
PARTS = ("ernie", "infra", "catalog", "workloads", "benchmarks", "policy", "testing", "lambda_layers")


def _is_sha256(call: ast.AST) -> bool:
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "sha256"
            and isinstance(call.func.value, ast.Name) and call.func.value.id == "hashlib")


def _hand_digests(path: Path) -> list[str]:
    """`hashlib.sha256(x.read_bytes())`, or a function that opens a file and feeds hashlib.sha256() by hand."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if _is_sha256(node) and any(isinstance(a, ast.Call) and isinstance(a.func, ast.Attribute)
                                    and a.func.attr == "read_bytes" for a in node.args):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: hashlib.sha256(<file>.read_bytes())")
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)]
            empty = any(_is_sha256(c) and not c.args for c in calls)
            opens = any((isinstance(c.func, ast.Attribute) and c.func.attr == "open")
                        or (isinstance(c.func, ast.Name) and c.func.id == "open") for c in calls)
            if empty and opens:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.name} reads a file into sha256() by hand")
    return found


def test_file_digests_use_hashlib_file_digest():
    found = [hit for part in PARTS for path in sorted((REPO / part).rglob("*.py")) for hit in _hand_digests(path)]
    assert not found, "use hashlib.file_digest (ernie: ernie.remote.collect.sha256_file):\n" + "\n".join(found)


def test_the_driver_has_one_file_digest_helper():
    defs = [f"{p.relative_to(REPO)}:{n.lineno}" for p in sorted((REPO / "ernie").rglob("*.py"))
            for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.FunctionDef) and "sha256" in n.name]
    assert defs == [f"ernie/remote/collect.py:{sha256_file.__code__.co_firstlineno}"], defs


def test_sha256_file_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 9000  # over one read buffer, not a multiple of it
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()


def test_local_api_gateway_decodes_the_query_string():
    """ernie serve --local's event carries queryStringParameters as API Gateway's payload 2.0 does: values
    percent-decoded, a repeated key's values joined with commas, a bare key blank, `+` a space (aws/aws-cdk#19827); rawQueryString untouched."""
    from ernie.serving.gateway import to_event

    raw = "text=caf%C3%A9%20au%20lait&tag=a&tag=b%2Cc&flag&empty=&q=a+b"
    event = to_event("GET", f"/predict?{raw}", {}, b"", "127.0.0.1")
    assert event["rawQueryString"] == raw
    assert event["queryStringParameters"] == {"text": "café au lait", "tag": "a,b,c", "flag": "", "empty": "",
                                             "q": "a b"}
    assert "queryStringParameters" not in to_event("GET", "/predict", {}, b"", "127.0.0.1")


def _install(root: Path, dir_name: str, name: str, files: dict[str, str], requires: tuple[str, ...] = ()) -> None:
    """A distribution as pip leaves it: its files, and a dist-info whose RECORD is CSV (a comma quotes the path)."""
    dist_info = root / f"{dir_name}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n" + "".join(f"Requires-Dist: {r}\n" for r in requires))
    rows = []
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
        rows.append(f'"{relative}",,{len(text)}\n' if "," in relative else f"{relative},,{len(text)}\n")
    (dist_info / "RECORD").write_text("".join(rows) + f"{dist_info.name}/RECORD,,\n")


def test_layer_builder_reads_dist_info_as_importlib_metadata_does(tmp_path):
    """Names are PEP 503 (packaging.utils.canonicalize_name) and RECORD is CSV: a path holding a comma is quoted,
    and the distribution's removal deletes that very file (a split on the first comma missed it)."""
    from lambda_layers import tree

    _install(tmp_path, "Zope_Odd-1.0", "Zope_Odd", {"zope_odd/__init__.py": "", "zope_odd/a,b.txt": "data"})
    _install(tmp_path, "keeper-1.0", "Keeper", {"keeper.py": "x = 1\n"}, requires=("zope.odd>=1",))
    found = {d.name: d for d in tree.read_distributions(tmp_path)}
    assert set(found) == {"zope-odd", "keeper"} and found["keeper"].requires == ("zope.odd>=1",)
    assert found["zope-odd"].bytes == (tmp_path / "zope_odd/a,b.txt").stat().st_size + sum(
        p.stat().st_size for p in (tmp_path / "Zope_Odd-1.0.dist-info").iterdir())
    assert tree.remove_distributions(tmp_path, {"zope-odd"}) == ["zope-odd"]
    assert not (tmp_path / "zope_odd").exists() and (tmp_path / "keeper.py").is_file()
