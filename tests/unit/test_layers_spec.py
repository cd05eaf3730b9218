"""workloads/serving/layers.toml read through catalog/schema.py: each mistake is one line naming the function,
the key and the fix, before any pip build starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambda_layers.errors import LayerError
from lambda_layers.spec import FUNCTIONS_FILE, load_functions

HEAD = '[f]\nhandler = "h.handler"\ncode = ["h.py"]\n'


def specs(tmp_path: Path, text: str) -> Path:
    (tmp_path / "h.py").write_text("")
    (tmp_path / "req.txt").write_text("six==1.17.0\n")
    path = tmp_path / "layers.toml"
    path.write_text(text)
    return path


def test_the_committed_specs_load() -> None:
    functions = load_functions(FUNCTIONS_FILE)
    assert set(functions) == {"tabular", "embed"}
    assert [layer.name for layer in functions["tabular"].layers] == ["numpy-scipy", "pandas", "scikit-learn", "model"]
    assert functions["embed"].layers[1].omit == ("huggingface-hub",)


@pytest.mark.parametrize(("text", "message"), [
    (HEAD + '[[f.layers]]\nname = "x"\n', "layer 'x' needs exactly one of `requirements` or `build`"),
    (HEAD + "".join(f'[[f.layers]]\nname = "l{i}"\nbuild = "h.py"\n' for i in range(6)),
     r"\[f\] in .*layers.toml: layers: has 6 layers; Lambda takes 1 to 5 per function"),
    (HEAD + '[[f.layers]]\nname = "x"\nrequirement = "req.txt"\n',
     r"layers\[0\].requirement: unknown key; did you mean requirements\? known: name, requirements, build"),
    ('[f]\ncode = ["h.py"]\n[[f.layers]]\nname = "x"\nbuild = "h.py"\n',
     "handler: required: the Lambda handler, module.function"),
    (HEAD + '[[f.layers]]\nname = "X_1"\nbuild = "h.py"\n',
     r"layers\[0\].name: layer name 'X_1' must be lower-case letters, digits and dashes"),
    (HEAD + '[[f.layers]]\nname = "x"\nbuild = "h.py"\n[[f.layers]]\nname = "x"\nbuild = "h.py"\n',
     r"layers: layer names must be unique, got \['x', 'x'\]"),
    (HEAD + '[[f.layers]]\nname = "x"\nbuild = "h.py"\ndrop = ["*.txt"]\n',
     "has a build script; `omit` and `drop` apply to requirements"),
    (HEAD + '[[f.layers]]\nname = "x"\nbuild = "gone.py"\n', r"layer 'x' build script .*gone.py does not exist"),
    (HEAD + '[[f.layers]]\nname = "x"\nrequirements = "req.txt"\ninputs = ["h.py"]\n',
     r"layers\[0\].inputs: layer 'x' has requirements; `inputs` apply to a build script"),
    ('f = 3\n', r"\[f\] in .*layers.toml: document: expected a table \(an object in JSON\), got 3"),
])
def test_a_bad_spec_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(LayerError, match=message):
        load_functions(specs(tmp_path, text))


def test_a_good_spec_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    path = specs(tmp_path, HEAD + '[[f.layers]]\nname = "six"\nrequirements = "req.txt"\nomit = ["Foo_Bar"]\n')
    function = load_functions(path)["f"]
    assert function.code == (tmp_path / "h.py",) and function.handler == "h.handler"
    assert function.layers[0].requirements == ("six==1.17.0",) and function.layers[0].omit == ("foo-bar",)
