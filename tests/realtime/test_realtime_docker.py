"""Realtime services in the real sandbox (the runtime image): the Measure of issue 17 (the
outputs of converted scikit-learn models equal scikit-learn's: labels exactly,
probabilities within 1e-5), and a pickle's code running only in the single-use container
that checks it: a pickle that writes files leaves none on the host, one that ends its
process or never ends is a 400."""

from __future__ import annotations

import asyncio
import os
import pickle
import secrets
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from tests.conftest import bearer, login, make_settings
from tests.realtime.conftest import FEATURES, form, frame_body, iris, leftovers, publish_model
from tests.services.conftest import consume

pytestmark = pytest.mark.docker


def models() -> dict[str, Any]:
    """The estimators of the Measure, each fit on iris as a data frame."""
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    frame, target = iris()
    classifiers = {
        "svc": SVC(probability=True, random_state=0),
        "logistic": LogisticRegression(max_iter=1000),
        "forest": RandomForestClassifier(n_estimators=50, random_state=0),
        "boosting": GradientBoostingClassifier(n_estimators=50, random_state=0),
        "histogram-boosting": HistGradientBoostingClassifier(max_iter=30, random_state=0),
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
    }
    # SVC's probability=True is deprecated since scikit-learn 1.9; the issue names it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        fitted = {name: model.fit(frame, target) for name, model in classifiers.items()}
    # a regressor: petal width from the other three features
    regressor = RandomForestRegressor(n_estimators=20, random_state=0)
    fitted["regressor"] = regressor.fit(frame[FEATURES[:3]], frame[FEATURES[3]])
    return fitted


def rows() -> pd.DataFrame:
    """Every iris row, and as many again with noise (some off the training range)."""
    frame, _ = iris()
    generator = np.random.default_rng(3)
    noisy = frame.to_numpy() + generator.normal(0.0, 0.5, frame.shape)
    return pd.concat([frame, pd.DataFrame(noisy, columns=frame.columns)], ignore_index=True)


async def test_converted_models_score_as_scikit_learn(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    fitted = models()
    # publish them all at once: each takes a conversion container, then a pool's
    await asyncio.gather(
        *(
            publish_model(client, admin_headers, name, "1", pickle.dumps(model))
            for name, model in fitted.items()
        )
    )
    frame = rows()
    for name, model in fitted.items():
        regression = name == "regressor"
        data = frame[FEATURES[:3]] if regression else frame
        result = await consume(client, admin_headers, name, "1", frame_body(data))
        assert result["success"], (name, result)
        out = result["outputParameters"]["outputData"]
        if regression:
            [column] = out
            np.testing.assert_allclose(out[column], model.predict(data), rtol=1e-5, err_msg=name)
            continue
        assert out["label"] == model.predict(data).tolist(), name
        columns = [f"probabilities_{c}" for c in model.classes_]
        assert list(out) == ["label", *columns], name
        np.testing.assert_allclose(
            np.array([out[c] for c in columns]).T,
            model.predict_proba(data),
            rtol=0,
            atol=1e-5,
            err_msg=name,
        )


class Command:
    """A pickle that runs a shell command as it loads."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return os.system, (self.command,)


class Writes:
    """A pickle that opens a file for writing as it loads."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return open, (self.path, "w")


class Exits:
    """A pickle that ends the process loading it."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return os._exit, (3,)


class Spins:
    """A pickle that never finishes loading."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return exec, ("while True: pass",)


async def test_a_pickles_code_runs_only_in_the_container_that_checks_it(
    aiohttp_client: Any, data_dir: Path
) -> None:
    # time enough for a loaded machine to import what a pickle needs, not much more
    settings = make_settings(data_dir, realtime_prepare_timeout=15, service_pool_initial=0)
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    marker = Path("/tmp") / f"o16n-realtime-{secrets.token_hex(4)}"
    # what the first three loaded (os.system's status, an open file) says their code ran
    cases: list[tuple[Any, str]] = [
        (Command(f"touch {marker}-system; touch pwned-system"), "holds a int"),
        (Writes(f"{marker}-open"), "holds a TextIOWrapper"),
        (Writes("pwned-open"), "holds a TextIOWrapper"),
        (Exits(), "ended"),
        (Spins(), "within 15 s"),
    ]
    before = leftovers(settings)
    try:
        for payload, says in cases:
            resp = await client.post(
                "/realtime-services/Evil/1",
                data=form(pickle.dumps(payload)),
                headers=headers,
            )
            assert resp.status == 400, (payload, await resp.text())
            message = (await resp.json())["message"]
            assert says in message, (type(payload).__name__, message)
            assert list(Path("/tmp").glob(f"{marker.name}*")) == []
            assert list(data_dir.rglob("pwned*")) == []
            assert leftovers(settings) == before
        assert await (await client.get("/services/Evil", headers=headers)).json() == []
    finally:
        for path in Path("/tmp").glob(f"{marker.name}*"):
            path.unlink()
