"""docker-compose.yaml: valid against the Compose Specification, and everything it names exists.

No Docker engine runs here, so the file is checked statically: the schema
(from the docker-compose 1.29.2 wheel that `make` downloads), the services and
volumes it references, the paths it mounts or builds from, and the commands
its services run.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"
SCHEMA_WHEEL_DIR = Path(sys.prefix) / "share" / "compose-schema"
SCHEMA_MEMBER = "compose/config/compose_spec.json"
VARIABLE = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?::-(?P<default>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator() -> Any:
    wheels = sorted(SCHEMA_WHEEL_DIR.glob("docker_compose-1.29.2-*.whl"))
    if not wheels:
        pytest.fail(f"no docker-compose wheel in {SCHEMA_WHEEL_DIR}; run make test, which downloads it")
    schema = json.loads(zipfile.ZipFile(wheels[0]).read(SCHEMA_MEMBER))
    # The schema names draft 2019-09, which this jsonschema release validates as 2020-12.
    return jsonschema.Draft202012Validator(schema)


def resolve_variables(text: str, values: dict[str, str]) -> str:
    """Replace ``${NAME:-default}`` with ``values[NAME]``, or with its default as Compose does when unset."""
    return VARIABLE.sub(lambda match: values.get(match["name"]) or match["default"] or "", text)


def test_file_matches_compose_specification(compose: dict[str, Any], validator: Any) -> None:
    errors = [f"{list(error.path)}: {error.message}" for error in validator.iter_errors(compose)]

    assert errors == []


def test_schema_rejects_an_unknown_service_key(compose: dict[str, Any], validator: Any) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["kafka"]["restart_policy"] = "always"

    assert not validator.is_valid(broken)


def test_depends_on_names_existing_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"


def test_named_volumes_are_declared_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    from ml_lifecycle.local.replay import default_retail_csv

    # The retail data lies beside the checkout, or wherever RETAIL_DATA_DIR points.
    values = {"RETAIL_DATA_DIR": str(default_retail_csv().parent)}
    declared = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = resolve_variables(volume, values).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (PROJECT_ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name} uses volume {source}, not declared under volumes"


def test_build_context_and_dockerfile_exist(compose: dict[str, Any]) -> None:
    builds = [service["build"] for service in compose["services"].values() if "build" in service]

    assert builds
    for build in builds:
        context = PROJECT_ROOT / build["context"]
        assert (context / build.get("dockerfile", "Dockerfile")).is_file()


def test_airflow_runs_all_four_components_on_postgres(compose: dict[str, Any]) -> None:
    services = compose["services"]
    commands = {tuple(service["command"][:2]) for service in services.values() if "command" in service}

    for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert ("airflow", component) in commands
    environment = services["airflow-scheduler"]["environment"]
    assert environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    assert environment["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert services["airflow-apiserver"]["image"] == services["warehouse"]["image"]


def test_kafka_runs_in_kraft_mode(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]

    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "--topic=pos_transactions" in compose["services"]["kafka-init"]["command"]


def test_python_modules_and_cli_commands_exist(compose: dict[str, Any]) -> None:
    from ml_lifecycle.cli import main

    for name, service in compose["services"].items():
        command = service.get("command", [])
        if command[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(command[2]) is not None, (
                f"{name} runs missing module {command[2]}"
            )
        if command[:1] == ["ml-lifecycle"]:
            with pytest.raises(SystemExit) as exit_info:
                main([command[1], "--help"])
            assert exit_info.value.code == 0, f"{name} runs unknown command ml-lifecycle {command[1]}"


def test_connections_point_at_services(compose: dict[str, Any]) -> None:
    environment = compose["services"]["airflow-scheduler"]["environment"]
    snowflake = json.loads(environment["AIRFLOW_CONN_SNOWFLAKE_DEFAULT"])
    kafka = json.loads(environment["AIRFLOW_CONN_KAFKA_DEFAULT"])
    aws = json.loads(environment["AIRFLOW_CONN_AWS_DEFAULT"])
    services = compose["services"]

    assert snowflake["extra"]["host"] in services
    assert kafka["extra"]["bootstrap.servers"].split(":")[0] in services
    assert aws["extra"]["endpoint_url"].split("//")[1].split(":")[0] in services
    assert (PROJECT_ROOT / "include" / "config" / "compose.yaml").is_file()
