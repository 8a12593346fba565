"""Functions deployed through Microsoft's SDK: it sends their source (inspect.getsource),
so they live at module level and import what they need inside."""

# ruff: noqa: F821 (model, offset and init_offset are globals of the service's workspace)
from __future__ import annotations

from typing import Any


def init() -> None:
    global init_offset
    init_offset = 1.0


def score(f: float, i: int, b: bool, s: str, v: Any, m: Any, df: Any) -> Any:
    import numpy as np
    import pandas as pd

    pred = float(model.predict(np.array([[f]]))[0]) + offset + init_offset
    pd.DataFrame({"x": [1, 2]}).to_csv("answer.csv", index=False)
    return pd.DataFrame(
        {
            "pred": [pred],
            "i2": [i * 2],
            "nb": [not b],
            "s": [s.upper()],
            "vsum": [float(np.sum(v))],
            "mshape": [m.shape[0] * 10 + m.shape[1]],
            "cols": [",".join(df.columns)],
        }
    )
