"""Real tables made from scikit-learn's bundled data sets, as a user would bring them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def wine_mixed(seed: int = 0) -> pd.DataFrame:
    """Wine with a text column (`region`), a boolean one (`organic`), and missing cells."""
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True)
    frame = wine.data.copy()
    rng = np.random.default_rng(seed)
    regions = np.array(["north", "south", "east", "west"])
    # The region says something about the class, so it is worth a column.
    frame["region"] = regions[(wine.target.to_numpy() + rng.integers(0, 2, len(frame))) % 4]
    frame["organic"] = rng.random(len(frame)) < 0.3
    frame.loc[rng.random(len(frame)) < 0.05, "alcohol"] = np.nan
    frame.loc[rng.random(len(frame)) < 0.05, "region"] = None
    frame["cultivar"] = np.array(["barolo", "grignolino", "barbera"])[wine.target.to_numpy()]
    return frame


def diabetes() -> pd.DataFrame:
    """Diabetes progression: a regression target of whole numbers (25 to 346)."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(as_frame=True, scaled=False)
    frame = data.data.copy()
    frame["progression"] = data.target.astype(int)
    return frame


def imbalanced(seed: int = 0) -> pd.DataFrame:
    """Breast cancer, the malignant class cut to 12 rows: 357 benign against 12."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.data.copy()
    frame["diagnosis"] = np.where(data.target == 1, "benign", "malignant")
    malignant = frame.index[frame["diagnosis"] == "malignant"]
    keep = np.random.default_rng(seed).choice(malignant, 12, replace=False)
    return frame[(frame["diagnosis"] == "benign") | frame.index.isin(keep)].reset_index(drop=True)


def write(frame: pd.DataFrame, path: Path) -> Path:
    """A CSV (empty cells for missing values) or a Parquet file, by the suffix."""
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path
