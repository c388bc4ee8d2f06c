"""The handler functions of include/serving/inference.py, called in-process."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .support import (
    FEATURE_COLUMNS,
    expected_forecasts,
    fit_boosting_model,
    fit_linear_model,
    import_serving_module,
    write_model_dir,
)

inference = import_serving_module("inference")

finite_values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
feature_rows = st.lists(st.lists(finite_values, min_size=3, max_size=3), min_size=1, max_size=20)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model"), fit_linear_model())


@pytest.fixture(scope="module")
def model(model_dir: Path) -> Any:
    return inference.model_fn(str(model_dir))


def predict_json(body: Any, model: Any) -> Any:
    return inference.predict_fn(inference.input_fn(json.dumps(body).encode(), "application/json"), model)


def predict_csv(text: str, model: Any) -> Any:
    return inference.predict_fn(inference.input_fn(text.encode(), "text/csv"), model)


class TestModelFn:
    def test_loads_metadata(self, model: Any) -> None:
        assert model.model_version == "20111205-ab12cd"
        assert model.feature_columns == tuple(FEATURE_COLUMNS)
        assert model.id_columns == ("STOCK_CODE", "WEEK_START")
        assert model.target == "QUANTITY"

    def test_missing_metadata_named(self, tmp_path: Path) -> None:
        (tmp_path / "model.joblib").write_bytes(b"")

        with pytest.raises(FileNotFoundError, match=r"metadata\.json"):
            inference.model_fn(str(tmp_path))

    @pytest.mark.parametrize(
        ("override", "message"),
        [
            ({"feature_columns": []}, "feature_columns"),
            ({"feature_columns": ["LAG_1", "LAG_1", "LAG_2"]}, "twice"),
            ({"model_version": ""}, "model_version"),
            ({"id_columns": "STOCK_CODE"}, "id_columns"),
            ({"feature_columns": ["LAG_1", "LAG_2"]}, "fitted on 3 features"),
        ],
    )
    def test_invalid_metadata_rejected(self, tmp_path: Path, override: dict[str, Any], message: str) -> None:
        write_model_dir(tmp_path, fit_linear_model(), metadata=override)

        with pytest.raises(ValueError, match=message):
            inference.model_fn(str(tmp_path))

    def test_column_order_must_match_fitted_names(self, tmp_path: Path) -> None:
        import pandas as pd
        from sklearn.linear_model import LinearRegression

        features, target = np.ones((4, 3)), np.arange(4.0)
        frame = pd.DataFrame(features, columns=["LAG_2", "LAG_1", "ROLLING_MEAN_4"])
        write_model_dir(tmp_path, LinearRegression().fit(frame, target))

        with pytest.raises(ValueError, match="order must match"):
            inference.model_fn(str(tmp_path))

    def test_dataframe_fit_predicts_without_warning(self, tmp_path: Path) -> None:
        import warnings

        import pandas as pd
        from sklearn.linear_model import LinearRegression

        features, target = np.arange(12.0).reshape(4, 3), np.arange(4.0)
        frame = pd.DataFrame(features, columns=FEATURE_COLUMNS)
        write_model_dir(tmp_path, LinearRegression().fit(frame, target))
        loaded = inference.model_fn(str(tmp_path))

        with warnings.catch_warnings(record=True) as caught:
            forecasts = predict_json([dict(zip(FEATURE_COLUMNS, [1.0, 2.0, 3.0], strict=True))], loaded)

        assert forecasts.values == expected_forecasts(loaded.estimator, [[1.0, 2.0, 3.0]])
        assert [str(warning.message) for warning in caught] == []

    def test_non_estimator_rejected(self, tmp_path: Path) -> None:
        write_model_dir(tmp_path, {"coefficients": [1, 2, 3]})

        with pytest.raises(TypeError, match="expected an estimator"):
            inference.model_fn(str(tmp_path))


class TestInputFn:
    def test_unsupported_content_type_415(self) -> None:
        with pytest.raises(inference.UnsupportedContentTypeError, match="'application/xml'") as caught:
            inference.input_fn(b"<a/>", "application/xml")

        assert caught.value.status_code == 415

    def test_missing_content_type_is_json(self) -> None:
        parsed = inference.input_fn(b'[{"LAG_1": 1}]', "")

        assert isinstance(parsed, inference.JsonRecords)

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (b'{"rows": []}', "needs the key 'instances'"),
            (b'"text"', "expected a list of records"),
            (b"[]", "no records"),
            (b"[1, 2]", "record 0 is a JSON int"),
            (b"\xff\xfe", "not valid UTF-8"),
        ],
    )
    def test_invalid_json_400(self, body: bytes, message: str) -> None:
        with pytest.raises(inference.RequestError, match=message) as caught:
            inference.input_fn(body, "application/json")

        assert caught.value.status_code == 400

    def test_csv_blank_lines_skipped_with_line_numbers(self) -> None:
        parsed = inference.input_fn(b"1,2,3\n\n4,5,6\r\n", "text/csv")

        assert parsed.rows == [(1, ["1", "2", "3"]), (3, ["4", "5", "6"])]

    def test_csv_without_rows_400(self) -> None:
        with pytest.raises(inference.RequestError, match="no CSV rows"):
            inference.input_fn(b"\n\n", "text/csv")


class TestPredictFn:
    @settings(max_examples=50, deadline=None)
    @given(rows=feature_rows)
    def test_json_and_csv_agree_with_predict(self, model: Any, rows: list[list[float]]) -> None:
        records = [dict(zip(FEATURE_COLUMNS, row, strict=True)) for row in rows]
        text = "".join(",".join(repr(value) for value in row) + "\n" for row in rows)

        from_json = predict_json({"instances": records}, model)
        from_csv = predict_csv(text, model)

        expected = expected_forecasts(model.estimator, rows)
        assert from_json.values == expected
        assert from_csv.values == expected
        assert all(value >= 0 for value in from_json.values)

    @settings(max_examples=50, deadline=None)
    @given(rows=feature_rows)
    def test_feature_matrix_keeps_column_order(self, model: Any, rows: list[list[float]]) -> None:
        # Keys in reverse order must still land in feature_columns order.
        records = [dict(reversed(list(zip(FEATURE_COLUMNS, row, strict=True)))) for row in rows]

        features, ids = inference.build_feature_matrix(inference.JsonRecords(records), model)

        assert features.dtype == np.float64
        assert features.tolist() == rows
        assert ids == [{} for _ in rows]

    def test_null_becomes_nan(self, model: Any) -> None:
        records = [{"LAG_1": None, "LAG_2": 1, "ROLLING_MEAN_4": 2.5}]

        features, _ = inference.build_feature_matrix(inference.JsonRecords(records), model)

        assert math.isnan(features[0, 0])
        assert features[0, 1:].tolist() == [1.0, 2.5]

    def test_csv_empty_field_becomes_nan(self, model: Any) -> None:
        parsed = inference.input_fn(b"1, ,3\n", "text/csv")

        features, _ = inference.build_feature_matrix(parsed, model)

        assert math.isnan(features[0, 1])

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (True, "non-numeric value True for 'LAG_2'"),
            ("7", "non-numeric value '7' for 'LAG_2'"),
            ([1], "non-numeric value \\[1\\] for 'LAG_2'"),
            (1e400, "infinite value inf for 'LAG_2'"),
        ],
    )
    def test_json_bad_value_names_record_key_value(self, model: Any, value: Any, message: str) -> None:
        records = [
            {"LAG_1": 1, "LAG_2": 2, "ROLLING_MEAN_4": 3},
            {"LAG_1": 1, "LAG_2": value, "ROLLING_MEAN_4": 3},
        ]

        with pytest.raises(inference.RequestError, match=f"record 1 has the {message}"):
            inference.build_feature_matrix(inference.JsonRecords(records), model)

    def test_json_missing_feature_names_key_and_index(self, model: Any) -> None:
        records = [{"LAG_1": 1, "LAG_2": 2, "ROLLING_MEAN_4": 3}, {"LAG_1": 1, "ROLLING_MEAN_4": 3}]

        with pytest.raises(inference.RequestError, match="record 1 is missing the feature 'LAG_2'"):
            inference.build_feature_matrix(inference.JsonRecords(records), model)

    def test_ids_echoed_only_when_present(self, model: Any) -> None:
        records = [
            {"LAG_1": 1, "LAG_2": 2, "ROLLING_MEAN_4": 3, "STOCK_CODE": "85123A", "PRICE": 2.55},
            {"LAG_1": 1, "LAG_2": 2, "ROLLING_MEAN_4": 3},
        ]

        _, ids = inference.build_feature_matrix(inference.JsonRecords(records), model)

        assert ids == [{"STOCK_CODE": "85123A"}, {}]

    def test_csv_header_only_400(self, model: Any) -> None:
        with pytest.raises(inference.RequestError, match="only a header row"):
            predict_csv("LAG_1,LAG_2,ROLLING_MEAN_4\n", model)

    def test_csv_header_not_first_is_invalid(self, model: Any) -> None:
        with pytest.raises(inference.RequestError, match="CSV row 2 has the non-numeric value 'LAG_1'"):
            predict_csv("1,2,3\nLAG_1,LAG_2,ROLLING_MEAN_4\n", model)

    def test_non_finite_prediction_is_runtime_error(self, model: Any) -> None:
        class NanModel:
            def predict(self, features: Any) -> Any:
                return np.full(features.shape[0], np.nan)

        broken = inference.ForecastModel(NanModel(), "v0", tuple(FEATURE_COLUMNS), (), "QUANTITY")

        with pytest.raises(RuntimeError, match="non-finite forecasts for the rows \\[0\\]"):
            predict_json([{"LAG_1": 1, "LAG_2": 2, "ROLLING_MEAN_4": 3}], broken)


class TestOutputFn:
    @pytest.mark.parametrize(
        ("accept", "expected"),
        [
            ("", "application/json"),
            ("*/*", "application/json"),
            ("application/json", "application/json"),
            ("text/csv", "text/csv"),
            ("text/*", "text/csv"),
            ("text/csv;q=0.5, application/json", "application/json"),
            ("application/json;q=0, text/csv", "text/csv"),
            ("image/png, text/csv", "text/csv"),
        ],
    )
    def test_accept_negotiation(self, accept: str, expected: str) -> None:
        assert inference.negotiate_accept(accept) == expected

    def test_unsupported_accept_406(self) -> None:
        with pytest.raises(inference.UnsupportedAcceptError, match="'image/png'") as caught:
            inference.negotiate_accept("image/png")

        assert caught.value.status_code == 406

    def test_json_output_shape(self) -> None:
        forecasts = inference.Forecasts([1.5, 0.0], [{"STOCK_CODE": "22423"}, {}], "v7")

        body, content_type = inference.output_fn(forecasts, "application/json")

        assert content_type == "application/json"
        assert json.loads(body) == {
            "predictions": [{"forecast": 1.5, "STOCK_CODE": "22423"}, {"forecast": 0.0}],
            "model_version": "v7",
        }

    @settings(max_examples=50, deadline=None)
    @given(values=st.lists(st.floats(min_value=0, max_value=1e9, allow_nan=False), min_size=1, max_size=20))
    def test_csv_output_round_trips(self, values: list[float]) -> None:
        forecasts = inference.Forecasts(values, [{} for _ in values], "v7")

        body, content_type = inference.output_fn(forecasts, "text/csv")

        assert content_type == "text/csv"
        assert [float(line) for line in body.decode().splitlines()] == values


SCALE_METADATA: dict[str, Any] = {"target_scale": {"feature": "ROLLING_MEAN_4", "offset": 1.0}}


class TestTargetScale:
    """Models that predict demand relative to a feature, as the training code produces them."""

    def test_forecast_multiplied_by_scale_feature(self, tmp_path: Path) -> None:
        estimator = fit_linear_model()
        scaled = inference.model_fn(str(write_model_dir(tmp_path, estimator, metadata=SCALE_METADATA)))
        rows = [[1.0, 0.0, 3.0], [5.0, 1.0, 0.0]]

        forecasts = predict_csv("\n".join(",".join(str(v) for v in row) for row in rows), scaled)

        raw = expected_forecasts(estimator, rows)
        assert forecasts.values == pytest.approx([raw[0] * 4.0, raw[1] * 1.0])

    def test_forecast_matrix_matches_predict_fn(self, tmp_path: Path) -> None:
        scaled = inference.model_fn(
            str(write_model_dir(tmp_path, fit_linear_model(), metadata=SCALE_METADATA))
        )
        rows = [[2.0, 1.0, 7.0], [0.5, 9.0, 2.0]]

        direct = inference.forecast_matrix(scaled, np.array(rows))

        assert predict_csv("\n".join(",".join(str(v) for v in row) for row in rows), scaled).values == (
            pytest.approx(direct.tolist())
        )

    def test_missing_scale_value_rejected(self, tmp_path: Path) -> None:
        scaled = inference.model_fn(
            str(write_model_dir(tmp_path, fit_boosting_model(), metadata=SCALE_METADATA))
        )

        with pytest.raises(inference.RequestError, match="ROLLING_MEAN_4"):
            predict_csv("1,2,", scaled)

    @pytest.mark.parametrize(
        "scale",
        [
            {"feature": "NOT_A_FEATURE", "offset": 1.0},
            {"feature": "LAG_1", "offset": "one"},
            "ROLLING_MEAN_4",
        ],
    )
    def test_invalid_scale_metadata_rejected(self, tmp_path: Path, scale: Any) -> None:
        write_model_dir(tmp_path, fit_linear_model(), metadata={"target_scale": scale})

        with pytest.raises(ValueError, match="target_scale"):
            inference.model_fn(str(tmp_path))
