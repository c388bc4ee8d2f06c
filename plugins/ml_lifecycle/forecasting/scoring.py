"""The cross-validation scorer, in a module that imports only numpy.

GridSearchCV sends the scorer to its worker processes, which import this
module to unpickle it. Inside an Airflow task, a worker that also had to
import Airflow failed to unpickle the scorer, so this module imports nothing
of Airflow or of the rest of the package.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ScaledWapeScorer:
    """Score a model that predicts scaled demand by its WAPE in units (negated, higher is better).

    :param scale_index: column of the input matrix holding the scale feature.
    :param scale_offset: added to that column to get the factor.
    """

    def __init__(self, scale_index: int, scale_offset: float) -> None:
        self.scale_index = scale_index
        self.scale_offset = scale_offset

    def __call__(self, estimator: Any, features: np.ndarray, scaled_target: np.ndarray) -> float:
        scale = features[:, self.scale_index] + self.scale_offset
        actual = scaled_target * scale
        forecast = np.clip(estimator.predict(features), 0, None) * scale
        total = np.abs(actual).sum()
        return -float(np.abs(actual - forecast).sum() / total) if total > 0 else 0.0
