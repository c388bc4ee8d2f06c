"""serve.py as a subprocess on a free loopback port, checked over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ml_lifecycle.local.process import free_port

from .support import (
    FEATURE_COLUMNS,
    SERVING_DIR,
    RunningServer,
    ServerFactory,
    expected_forecasts,
    fit_boosting_model,
    import_serving_module,
    write_model_dir,
)

ROWS = [[3.0, 1.0, 4.0], [0.0, 5.0, 0.0], [10.5, 2.25, 7.0]]


def records(rows: list[list[float]], **ids: list[str]) -> list[dict[str, Any]]:
    result = []
    for index, row in enumerate(rows):
        record: dict[str, Any] = dict(zip(FEATURE_COLUMNS, row, strict=True))
        record.update({name: values[index] for name, values in ids.items()})
        result.append(record)
    return result


def csv_body(rows: list[list[float]], header: bool = False) -> str:
    lines = [",".join(FEATURE_COLUMNS)] if header else []
    lines += [",".join(repr(value) for value in row) for row in rows]
    return "\n".join(lines) + "\n"


class TestPing:
    def test_ping_503_for_invalid_model_dir(self, tmp_path: Path, start_server: ServerFactory) -> None:
        empty_dir = tmp_path / "empty-model"
        empty_dir.mkdir()
        server = start_server(empty_dir)

        response = server.wait_for_ping("failed")

        assert response.status == 503
        assert response.json()["status"] == "failed"
        assert "metadata.json" in response.json()["error"]
        invocation = server.invoke(json.dumps(records(ROWS)))
        assert invocation.status == 503
        assert "not loaded" in invocation.json()["error"]

    def test_ping_200_once_model_loaded(
        self, tmp_path: Path, start_server: ServerFactory, linear_model: Any
    ) -> None:
        server = start_server(write_model_dir(tmp_path / "model", linear_model))

        response = server.wait_for_ping("healthy")

        assert response.status == 200, server.log_text()
        assert response.json() == {"status": "healthy"}

    def test_serve_argument_and_sagemaker_env(
        self, tmp_path: Path, start_server: ServerFactory, linear_model: Any
    ) -> None:
        port = free_port()
        env = {
            **os.environ,
            "SAGEMAKER_BIND_TO_PORT": str(port),
            "SM_MODEL_DIR": str(write_model_dir(tmp_path / "model", linear_model)),
        }
        server = start_server(None, port=None, extra_args=("serve",), env=env)

        assert server.port == port
        assert server.wait_for_ping("healthy").status == 200, server.log_text()

    def test_sigterm_stops_cleanly(
        self, tmp_path: Path, start_server: ServerFactory, linear_model: Any
    ) -> None:
        server = start_server(write_model_dir(tmp_path / "model", linear_model))
        assert server.wait_for_ping("healthy").status == 200

        server.service.process.send_signal(signal.SIGTERM)
        returncode = server.service.process.wait(timeout=10)

        assert returncode == 0
        assert "stopping" in server.log_text()


class TestPredictions:
    def test_json_instances_equal_clipped_predict(
        self, linear_server: RunningServer, linear_model: Any
    ) -> None:
        body = {"instances": records(ROWS)}

        response = linear_server.invoke(json.dumps(body))

        assert response.status == 200, response.body
        assert response.content_type == "application/json"
        payload = response.json()
        forecasts = [item["forecast"] for item in payload["predictions"]]
        assert forecasts == expected_forecasts(linear_model, ROWS)
        # The second row predicts below zero before clipping.
        assert linear_model.predict([ROWS[1]])[0] < 0
        assert forecasts[1] == 0.0
        assert payload["model_version"] == "20111205-ab12cd"

    def test_json_bare_list_accepted(self, linear_server: RunningServer, linear_model: Any) -> None:
        response = linear_server.invoke(json.dumps(records(ROWS)), accept="*/*")

        assert response.status == 200
        assert [item["forecast"] for item in response.json()["predictions"]] == expected_forecasts(
            linear_model, ROWS
        )

    def test_json_echoes_ids_and_ignores_unknown_keys(self, linear_server: RunningServer) -> None:
        body = records(ROWS[:2], STOCK_CODE=["85123A", "22423"], WEEK_START=["2011-12-05", "2011-12-05"])
        body[0]["COLOUR"] = "red"
        body.append(dict(zip(FEATURE_COLUMNS, ROWS[2], strict=True)))

        response = linear_server.invoke(json.dumps({"instances": body}))

        predictions = response.json()["predictions"]
        assert response.status == 200
        assert set(predictions[0]) == {"forecast", "STOCK_CODE", "WEEK_START"}
        assert predictions[0]["STOCK_CODE"] == "85123A"
        assert predictions[1]["WEEK_START"] == "2011-12-05"
        assert set(predictions[2]) == {"forecast"}

    def test_csv_equal_clipped_predict(self, linear_server: RunningServer, linear_model: Any) -> None:
        response = linear_server.invoke(csv_body(ROWS), content_type="text/csv", accept="text/csv")

        assert response.status == 200, response.body
        assert response.content_type == "text/csv"
        values = [float(line) for line in response.body.decode().splitlines()]
        assert values == expected_forecasts(linear_model, ROWS)

    def test_csv_header_row_skipped(self, linear_server: RunningServer, linear_model: Any) -> None:
        body = csv_body(ROWS, header=True).replace("LAG_1", "lag_1")

        response = linear_server.invoke(body, content_type="text/csv; charset=utf-8")

        assert response.status == 200, response.body
        forecasts = [item["forecast"] for item in response.json()["predictions"]]
        assert forecasts == expected_forecasts(linear_model, ROWS)

    def test_null_and_empty_field_are_missing(self, tmp_path: Path, start_server: ServerFactory) -> None:
        import numpy as np

        model = fit_boosting_model()
        server = start_server(write_model_dir(tmp_path / "model", model))
        assert server.wait_for_ping("healthy").status == 200
        record = {"LAG_1": None, "LAG_2": 4.0, "ROLLING_MEAN_4": 2.0}
        expected = float(np.clip(model.predict(np.array([[np.nan, 4.0, 2.0]])), 0, None)[0])

        from_json = server.invoke(json.dumps([record]))
        from_csv = server.invoke(",4.0,2.0\n", content_type="text/csv", accept="text/csv")

        assert from_json.json()["predictions"][0]["forecast"] == expected
        assert float(from_csv.body) == expected


class TestErrors:
    def test_missing_feature_400_names_key_and_index(self, linear_server: RunningServer) -> None:
        body = records(ROWS)
        del body[2]["LAG_2"]

        response = linear_server.invoke(json.dumps(body))

        assert response.status == 400
        message = response.json()["error"]
        assert "record 2" in message
        assert "'LAG_2'" in message
        log_text = linear_server.wait_for_log("POST /invocations 400 rows=-")
        assert "POST /invocations 400 rows=-" in log_text
        assert message in log_text

    def test_non_numeric_400_names_key_index_value(self, linear_server: RunningServer) -> None:
        body = records(ROWS)
        body[1]["ROLLING_MEAN_4"] = "twelve"

        response = linear_server.invoke(json.dumps(body))

        assert response.status == 400
        message = response.json()["error"]
        assert "record 1" in message
        assert "'ROLLING_MEAN_4'" in message
        assert "'twelve'" in message

    def test_csv_wrong_field_count_400_names_row(self, linear_server: RunningServer) -> None:
        body = "1,2,3\n4,5\n"

        response = linear_server.invoke(body, content_type="text/csv")

        assert response.status == 400
        message = response.json()["error"]
        assert "CSV row 2" in message
        assert "2 fields, expected 3" in message

    def test_csv_non_numeric_400_names_value(self, linear_server: RunningServer) -> None:
        response = linear_server.invoke("1,2,3\n1,x7,3\n", content_type="text/csv")

        assert response.status == 400
        message = response.json()["error"]
        assert "CSV row 2" in message
        assert "'x7'" in message
        assert "'LAG_2'" in message

    def test_invalid_json_400(self, linear_server: RunningServer) -> None:
        response = linear_server.invoke('{"instances": [')

        assert response.status == 400
        assert "not valid JSON" in response.json()["error"]

    def test_empty_body_400(self, linear_server: RunningServer) -> None:
        response = linear_server.invoke(b"")

        assert response.status == 400
        assert "empty" in response.json()["error"]

    def test_unsupported_content_type_415(self, linear_server: RunningServer) -> None:
        response = linear_server.invoke("1,2,3", content_type="application/x-parquet")

        assert response.status == 415
        assert "'application/x-parquet'" in response.json()["error"]

    def test_unsupported_accept_406(self, linear_server: RunningServer) -> None:
        response = linear_server.invoke(json.dumps(records(ROWS)), accept="application/x-protobuf")

        assert response.status == 406
        assert "'application/x-protobuf'" in response.json()["error"]

    def test_payload_over_6_mb_413(self, linear_server: RunningServer) -> None:
        size = 6 * 1024 * 1024 + 1
        body = b"[" + b" " * (size - 2) + b"]"

        response = linear_server.invoke(body)

        assert response.status == 413
        assert str(size) in response.json()["error"]

    def test_payload_of_exactly_6_mb_accepted(self, linear_server: RunningServer) -> None:
        record = json.dumps(records(ROWS[:1]))
        body = record[:-1] + " " * (6 * 1024 * 1024 - len(record)) + "]"

        response = linear_server.invoke(body)

        assert len(body) == 6 * 1024 * 1024
        assert response.status == 200

    def test_model_failure_500_with_message(self, linear_server: RunningServer) -> None:
        # LinearRegression rejects NaN, so a null value fails inside predict().
        body = records(ROWS)
        body[0]["LAG_1"] = None

        response = linear_server.invoke(json.dumps(body))

        assert response.status == 500
        assert "NaN" in response.json()["error"]

    def test_unknown_path_404(self, linear_server: RunningServer) -> None:
        response = linear_server.request("GET", "/models")

        assert response.status == 404

    def test_request_log_has_no_payload(self, linear_server: RunningServer) -> None:
        marker = "SECRET-STOCK-CODE-7781"
        body = records(ROWS[:1], STOCK_CODE=[marker])

        linear_server.invoke(json.dumps(body))

        log_text = linear_server.wait_for_log("POST /invocations 200 rows=1")
        assert "POST /invocations 200 rows=1" in log_text
        assert marker not in log_text


class TestCustomHandlers:
    def test_model_dir_handlers_replace_bundled(
        self, tmp_path: Path, start_server: ServerFactory, linear_model: Any
    ) -> None:
        model_dir = write_model_dir(tmp_path / "model", linear_model)
        (model_dir / "code" / "inference.py").write_text(
            "import json\n"
            "from pathlib import Path\n"
            "import joblib\n"
            "\n"
            "def model_fn(model_dir):\n"
            "    return joblib.load(Path(model_dir) / 'model.joblib')\n"
            "\n"
            "def input_fn(body, content_type):\n"
            "    return json.loads(body)['rows']\n"
            "\n"
            "def predict_fn(data, model):\n"
            "    return [10 * float(value) for value in model.predict(data)]\n"
            "\n"
            "def output_fn(prediction, accept):\n"
            "    return json.dumps({'custom': prediction}).encode(), 'application/vnd.custom+json'\n",
            encoding="utf-8",
        )
        server = start_server(model_dir)
        assert server.wait_for_ping("healthy").status == 200, server.log_text()

        response = server.invoke(json.dumps({"rows": ROWS}), content_type="application/vnd.custom+json")

        assert response.status == 200, response.body
        assert response.content_type == "application/vnd.custom+json"
        assert response.json()["custom"] == [10 * float(value) for value in linear_model.predict(ROWS)]

    def test_missing_handlers_fall_back_to_bundled(
        self, tmp_path: Path, start_server: ServerFactory, linear_model: Any
    ) -> None:
        model_dir = write_model_dir(tmp_path / "model", linear_model)
        (model_dir / "code" / "inference.py").write_text(
            "def output_fn(prediction, accept):\n"
            "    return '|'.join(repr(value) for value in prediction.values).encode(), 'text/plain'\n",
            encoding="utf-8",
        )
        server = start_server(model_dir)
        assert server.wait_for_ping("healthy").status == 200, server.log_text()

        response = server.invoke(json.dumps(records(ROWS)))

        assert response.status == 200, response.body
        assert response.content_type == "text/plain"
        assert [float(value) for value in response.body.decode().split("|")] == expected_forecasts(
            linear_model, ROWS
        )

    def test_handler_status_code_passed_through(
        self, tmp_path: Path, start_server: ServerFactory, linear_model: Any
    ) -> None:
        model_dir = write_model_dir(tmp_path / "model", linear_model)
        (model_dir / "code" / "inference.py").write_text(
            "class Unprocessable(ValueError):\n"
            "    status_code = 422\n"
            "\n"
            "def input_fn(body, content_type):\n"
            "    raise Unprocessable('week 2011-13 does not exist')\n",
            encoding="utf-8",
        )
        server = start_server(model_dir)
        assert server.wait_for_ping("healthy").status == 200, server.log_text()

        response = server.invoke(json.dumps(records(ROWS)))

        assert response.status == 422
        assert response.json() == {"error": "week 2011-13 does not exist"}


class TestCommandLine:
    def test_defaults_from_sagemaker_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        serve = import_serving_module("serve")
        monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "9091")
        monkeypatch.setenv("SM_MODEL_DIR", "/srv/model")

        args = serve.parse_args(["serve"])

        assert args.port == 9091
        assert args.model_dir == Path("/srv/model")
        assert args.host == "0.0.0.0"

    def test_defaults_without_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        serve = import_serving_module("serve")
        monkeypatch.delenv("SAGEMAKER_BIND_TO_PORT", raising=False)
        monkeypatch.delenv("SM_MODEL_DIR", raising=False)

        args = serve.parse_args([])

        assert args.port == 8080
        assert args.model_dir == Path("/opt/ml/model")

    def test_options_override_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        serve = import_serving_module("serve")
        monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "9091")

        args = serve.parse_args(["--port", "0", "--model-dir", "/tmp/m", "--host", "127.0.0.1"])

        assert args.port == 0
        assert args.model_dir == Path("/tmp/m")
        assert args.host == "127.0.0.1"

    def test_unknown_command_rejected(self) -> None:
        result = subprocess.run(
            [sys.executable, str(SERVING_DIR / "serve.py"), "train"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

        assert result.returncode == 2
        assert "invalid choice: 'train'" in result.stderr
