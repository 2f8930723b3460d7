#!/usr/bin/env bash
# The main job end to end on the embedded defaults (SQLite + ./.modelyard/): generate data, train,
# publish, load in-process and predict. Run from the repository root after `pip install -e .`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

echo "== 1. generate 20,000 synthetic house sales (seeded) and the bundled breast-cancer data"
$PY examples/house_prices/generate.py
$PY examples/breast_cancer/generate.py

echo "== 2. train, evaluate on the held-out split, publish (and point 'production' at it)"
$PY -m modelyard train examples/house_prices/spec.toml --alias production
$PY -m modelyard train examples/breast_cancer/spec.toml --alias production
$PY -m modelyard models list

echo "== 3. pattern 4: load the production model in-process and predict"
$PY - <<'PYEOF'
import pandas as pd
import modelyard

houses = pd.read_csv("examples/house_prices/houses.csv").drop(columns="price").head(3)
model = modelyard.load("house-prices@production")
for row, price in zip(houses.to_dict("records"), model.predict(houses)):
    print(f"{model.name} v{model.version}: {row['area_sqm']:>6} m2 in {row['neighborhood']:<11} -> {price:,.0f}")

cancer = modelyard.load("breast-cancer")
rows = pd.read_csv("examples/breast_cancer/breast_cancer.csv").drop(columns="target").head(2)
print("breast-cancer classes", cancer.classes_, "probabilities", cancer.predict_proba(rows).round(4).tolist())
PYEOF

echo "== 4. rebuild version 1 from its manifest and prove the predictions are identical"
$PY -m modelyard reproduce house-prices 1
