"""A seeded generator of realistic synthetic house-price data (numeric and categorical, with gaps).

    python examples/house_prices/generate.py --rows 20000 --out examples/house_prices/houses.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

NEIGHBORHOODS = {
    "Old Town": 1.35, "Riverside": 1.25, "Harbor": 1.30, "University": 1.10, "Northgate": 0.95,
    "Eastfield": 0.85, "Westbrook": 1.00, "Millbrook": 0.90, "Hillcrest": 1.15, "Lakeside": 1.20,
    "Industrial": 0.70, "Southpark": 0.80,
}
HOUSE_TYPES = {"detached": 1.15, "semi-detached": 1.0, "terraced": 0.9, "apartment": 0.8, "bungalow": 1.05}
CONDITIONS = {"poor": 0.8, "fair": 0.92, "good": 1.0, "excellent": 1.12}
HEATING = {"gas": 1.0, "electric": 0.97, "heat pump": 1.06, "oil": 0.94}


def generate(rows: int = 20_000, seed: int = 7, shift: float = 0.0) -> pd.DataFrame:
    """``shift`` > 0 moves the population (bigger, newer, pricier houses): an outdated or drifted data set."""
    rng = np.random.default_rng(seed)
    hood = rng.choice(list(NEIGHBORHOODS), rows, p=np.full(len(NEIGHBORHOODS), 1 / len(NEIGHBORHOODS)))
    htype = rng.choice(list(HOUSE_TYPES), rows, p=[0.3, 0.2, 0.2, 0.22, 0.08])
    area = np.clip(rng.lognormal(np.log(110 * (1 + shift)), 0.35, rows), 25, 600)
    area = np.where(htype == "apartment", area * 0.65, area)
    bedrooms = np.clip(np.round(area / 35 + rng.normal(0, 0.7, rows)), 1, 8).astype(int)
    bathrooms = np.clip(np.round(bedrooms / 2 + rng.normal(0, 0.5, rows)), 1, 5).astype(int)
    year = np.clip(rng.normal(1975 + 20 * shift, 25, rows), 1850, 2024).round().astype(int)
    lot = np.where(htype == "apartment", 0.0, np.clip(rng.lognormal(np.log(400), 0.6, rows), 50, 5000))
    garage = np.clip(rng.poisson(1.0, rows), 0, 4)
    distance = np.clip(rng.gamma(2.0, 4.0, rows), 0.2, 60)
    school = np.clip(rng.normal(6.5, 1.8, rows), 1, 10).round(1)
    crime = np.clip(rng.gamma(2.0, 1.5, rows), 0.1, 30).round(2)
    condition = rng.choice(list(CONDITIONS), rows, p=[0.08, 0.27, 0.45, 0.2])
    heating = rng.choice(list(HEATING), rows, p=[0.55, 0.15, 0.2, 0.1])
    has_pool = rng.choice(["yes", "no"], rows, p=[0.07, 0.93])
    renovated = np.where(rng.random(rows) < 0.3, rng.integers(1990, 2025, rows), np.nan)
    floors = np.where(htype == "bungalow", 1, rng.choice([1, 2, 3], rows, p=[0.3, 0.6, 0.1]))

    price = (
        2_600 * area
        * np.vectorize(NEIGHBORHOODS.get)(hood)
        * np.vectorize(HOUSE_TYPES.get)(htype)
        * np.vectorize(CONDITIONS.get)(condition)
        * np.vectorize(HEATING.get)(heating)
        * (1 + 0.04 * (school - 6.5))
        * np.exp(-0.012 * distance)
        * (1 - 0.01 * crime)
        * (1 + 0.0015 * (year - 1975))
        + 15_000 * bathrooms + 9_000 * garage + 25 * lot
        + np.where(has_pool == "yes", 35_000, 0)
        + np.where(np.isnan(renovated), 0, 20_000)
    ) * (1 + 0.5 * shift)
    price = np.round(price * rng.lognormal(0, 0.08, rows), -2)

    frame = pd.DataFrame({
        "area_sqm": area.round(1), "bedrooms": bedrooms, "bathrooms": bathrooms, "year_built": year,
        "year_renovated": renovated, "lot_sqm": lot.round(0), "garage_spaces": garage, "floors": floors,
        "distance_center_km": distance.round(2), "school_rating": school, "crime_index": crime,
        "neighborhood": hood, "house_type": htype, "condition": condition, "heating": heating,
        "has_pool": has_pool, "price": price,
    })
    for col, frac in (("lot_sqm", 0.04), ("school_rating", 0.05), ("heating", 0.03), ("condition", 0.02)):
        frame.loc[rng.random(rows) < frac, col] = np.nan
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shift", type=float, default=0.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "houses.csv")
    args = parser.parse_args()
    frame = generate(args.rows, args.seed, args.shift)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(f"wrote {len(frame)} rows to {args.out}")


if __name__ == "__main__":
    main()
