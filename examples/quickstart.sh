#!/usr/bin/env bash
# The main job end to end on the embedded defaults (SQLite + ./.modelyard/): generate data, train,
# publish, load in-process and predict, then serve over REST and answer a curl request.
# Run from the repository root after `pip install -e .`.
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

echo "== 5. pattern 1: serve every model over REST, ask with curl, then read the answer back from the log"
PORT=${MODELYARD_PORT:-$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
mkdir -p .modelyard
$PY -m modelyard serve --port "$PORT" > .modelyard/serve.log 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null && break
  kill -0 $SERVER 2>/dev/null || { cat .modelyard/serve.log; exit 1; }
  sleep 0.5
done
curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null || { echo "server not ready:"; cat .modelyard/serve.log; exit 1; }
RID=quickstart-$(date +%s)
set -x
curl -s -X POST "http://127.0.0.1:$PORT/v1/models/house-prices/predict" \
  -H 'Content-Type: application/json' -H "X-Request-ID: $RID" \
  -d '{"instances": [{"area_sqm": 120, "bedrooms": 3, "bathrooms": 2, "year_built": 1990, "year_renovated": null,
       "lot_sqm": 300, "garage_spaces": 1, "floors": 2, "distance_center_km": 5.5, "school_rating": 7.5,
       "crime_index": 2.1, "neighborhood": "Harbor", "house_type": "detached", "condition": "good",
       "heating": "gas", "has_pool": "no"}]}'
{ set +x; } 2> /dev/null
echo
kill -TERM $SERVER   # a graceful stop: uvicorn finishes requests in flight, then the prediction log is flushed
wait $SERVER || true
trap - EXIT
$PY -m modelyard predictions show "$RID"
$PY -m modelyard replay "$RID"
