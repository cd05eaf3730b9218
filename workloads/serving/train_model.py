"""Train the tabular model the serving stack holds, and write it as an importable package.

    python workloads/serving/train_model.py --out DIR

scikit-learn's diabetes data set (shipped with the library, no download; raw units via `scaled=False`):
ten baseline measurements of 442 patients, the target a measure of disease progression one year later.
A `ColumnTransformer` scales the nine numeric columns and one-hot encodes `sex` (a category coded 1/2),
then ridge regression with the penalty chosen by cross-validation.

DIR receives what the model layer's `python/` holds:
  tabular_model/                  the loader (copied from tabular_model/ beside this script)
  tabular_model/model.pkl         the fitted pipeline
  tabular_model/schema.json       the input schema of one instance, the metrics and the versions used
  tabular_model-<v>.dist-info/    METADATA pinning the versions the pickle needs (checked by the builder)
Everything is written deterministically: the same inputs give byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import shutil
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes
from sklearn.linear_model import RidgeCV
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from dist_info import write_dist_info

PACKAGE = "tabular_model"
MODEL_VERSION = "1.0.0"
CATEGORICAL = ["sex"]
# The distributions the pickle needs at load time, at exactly the versions that wrote it.
RUNTIME_DISTRIBUTIONS = ["numpy", "scipy", "pandas", "scikit-learn"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory to write the package into (a layer's python/)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of rows held out for the metrics")
    args = parser.parse_args()
    if not 0.0 < args.test_fraction < 1.0:
        parser.error(f"--test-fraction must lie strictly between 0 and 1, got {args.test_fraction}")
    return args


def load_frame() -> tuple[pd.DataFrame, pd.Series]:
    """The diabetes data in its raw units, with `sex` as the integer category it is."""
    data = load_diabetes(as_frame=True, scaled=False)
    features = data.data.astype({"sex": "int64"})
    return features, data.target


def build_pipeline(numeric: list[str], categorical: list[str]) -> Pipeline:
    features = ColumnTransformer(
        [
            ("numeric", StandardScaler(), numeric),
            # Unknown categories are refused by the handler before they get here; "error" keeps it honest.
            ("categorical", OneHotEncoder(handle_unknown="error", sparse_output=False), categorical),
        ]
    )
    return Pipeline([("features", features), ("regressor", RidgeCV(alphas=np.logspace(-3, 3, 13)))])


def instance_schema(frame: pd.DataFrame, pipeline: Pipeline) -> list[dict]:
    """One entry per input column, in the order the pipeline was fitted on."""
    encoder = pipeline.named_steps["features"].named_transformers_["categorical"]
    categories = {name: [c.item() for c in cats] for name, cats in zip(CATEGORICAL, encoder.categories_)}
    return [
        {"name": name, "type": "category", "categories": categories[name]}
        if name in categories
        else {"name": name, "type": "number"}
        for name in frame.columns
    ]


def main() -> None:
    args = parse_args()
    features, target = load_frame()
    numeric = [c for c in features.columns if c not in CATEGORICAL]
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=args.test_fraction, random_state=args.seed
    )
    pipeline = build_pipeline(numeric, CATEGORICAL).fit(x_train, y_train)
    predicted = pipeline.predict(x_test)
    metrics = {
        "r2_test": round(float(r2_score(y_test, predicted)), 4),
        "mae_test": round(float(mean_absolute_error(y_test, predicted)), 2),
        "alpha": float(pipeline.named_steps["regressor"].alpha_),
        "rows_train": len(x_train),
        "rows_test": len(x_test),
    }
    versions = {name: version(name) for name in RUNTIME_DISTRIBUTIONS}
    schema = {
        "name": "diabetes-progression",
        "version": MODEL_VERSION,
        "description": "Disease progression one year after baseline (sklearn.datasets.load_diabetes, raw units)",
        "features": instance_schema(features, pipeline),
        "target": {"name": "progression", "type": "number"},
        "metrics": metrics,
        "versions": {"python": platform.python_version(), **versions},
    }

    package = args.out / PACKAGE
    if package.exists():
        raise SystemExit(f"{package} already exists: pass an empty --out directory")
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(Path(__file__).with_name(PACKAGE), package, ignore=shutil.ignore_patterns("__pycache__"))
    # Protocol 5 loads on every Python the layers target (3.8+).
    (package / "model.pkl").write_bytes(pickle.dumps(pipeline, protocol=5))
    (package / "schema.json").write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    write_dist_info(args.out, PACKAGE, MODEL_VERSION,
                    "diabetes progression regression, served by workloads/serving/handler.py",
                    {name: f"=={versions[name]}" for name in RUNTIME_DISTRIBUTIONS})
    print(
        f"trained {schema['name']} {MODEL_VERSION}: r2_test={metrics['r2_test']} mae_test={metrics['mae_test']} "
        f"alpha={metrics['alpha']:g} -> {package}"
    )


if __name__ == "__main__":
    main()
