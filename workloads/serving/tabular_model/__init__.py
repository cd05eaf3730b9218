"""The model the serving stack holds: a fitted scikit-learn pipeline and the schema of one instance.

`train_model.py` writes `model.pkl` and `schema.json` beside this file. The model layer puts the package
in its `python/` (Lambda's /opt/python), so callers find it through `sys.path` alone, on Lambda and from
unpacked layers anywhere.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent


def load_schema() -> dict[str, Any]:
    """Name, version, the input features (name, type, categories), metrics and versions of the model."""
    return json.loads((_HERE / "schema.json").read_text())


def load_pipeline() -> Any:
    """The fitted pipeline; it takes a pandas DataFrame with the schema's columns and returns predictions."""
    # The pickle is one this project built into a layer it published itself; never load one from a request.
    return pickle.loads((_HERE / "model.pkl").read_bytes())
