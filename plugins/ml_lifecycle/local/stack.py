"""The local stack: warehouse emulator, Kafka broker, AWS emulator, sink and Airflow, on loopback.

``LocalStack(root).start()`` starts every service on 127.0.0.1 and free ports
and keeps its state under ``root`` (``.local/`` by default). It writes
``root/env`` with the variables that point Airflow and its connections at the
services. It records every process group in ``root/stack.json``, so
``stop_stack(root)`` stops them even from another process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_lifecycle.config import PROJECT_ROOT, LifecycleConfig, parse_config
from ml_lifecycle.local.process import (
    ServiceProcess,
    ServiceStartError,
    free_port,
    python_module_command,
    start_service,
    stop_process_group,
)

log = logging.getLogger(__name__)

LOCAL_CONFIG = PROJECT_ROOT / "include" / "config" / "local.yaml"
DEFAULT_ROOT = PROJECT_ROOT / ".local"
STATE_FILE = "stack.json"
# Every process of a stack inherits this variable, so stopping the stack also
# finds processes that left their process group (task processes of the
# LocalExecutor and the workers they start).
STACK_ID_ENV = "ML_LIFECYCLE_STACK_ID"
ENV_FILE = "env"
AIRFLOW_USER = "admin"
# Credentials the AWS emulator accepts; it maps them to account 123456789012.
AWS_ACCESS_KEY = "testing"
AWS_SECRET_KEY = "testing"  # noqa: S105 - a fixed value of the local emulator, not a secret
# A consumer that left the group blocks the mock broker's next join until its
# session times out, so the local sink uses a short session. Below about 6 s
# the session expired under full CPU load during the whole-file replay.
SINK_SESSION_TIMEOUT_MS = 6000
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
AIRFLOW_START_TIMEOUT_S = 180.0
DAG_IDS = (
    "pos_load_check",
    "sales_data_validation",
    "sales_features",
    "forecast_training",
    "endpoint_deployment",
    "forecast_monitoring",
)


@dataclass(frozen=True)
class StackLayout:
    """Directories of one stack under its root."""

    root: Path

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def warehouse_data(self) -> Path:
        return self.root / "warehouse"

    @property
    def aws_state(self) -> Path:
        return self.root / "aws"

    @property
    def sink_work(self) -> Path:
        return self.root / "sink"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    @property
    def env_file(self) -> Path:
        return self.root / ENV_FILE


@dataclass
class LocalStack:
    """Start and stop the local services.

    :param root: directory for the state of this stack (``.local`` for ``make up``).
    :param config_path: lifecycle configuration the services and DAGs use.
    :param with_airflow: also start the Airflow components.
    :param with_sink: also start the Kafka-to-Snowflake sink.
    :param with_aws: also start the AWS emulator.
    :param api_port: port of the Airflow UI and API; ``None`` picks a free one.
    :param fresh: delete the previous state under ``root`` first.
    """

    root: Path = DEFAULT_ROOT
    config_path: Path = LOCAL_CONFIG
    with_airflow: bool = True
    with_sink: bool = True
    with_aws: bool = True
    api_port: int | None = None
    fresh: bool = False
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    airflow_password: str | None = None
    stack_id: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def layout(self) -> StackLayout:
        return StackLayout(self.root)

    @property
    def config(self) -> LifecycleConfig:
        return parse_config(self.config_path)

    # ----------------------------------------------------------------- start

    def start(self) -> LocalStack:
        """Start every service, bootstrap the warehouse and AWS resources, and write the env file."""
        if self.layout.state_file.exists():
            stop_stack(self.root)
        if self.fresh and self.root.exists():
            shutil.rmtree(self.root)
        for directory in (self.layout.run, self.layout.logs):
            directory.mkdir(parents=True, exist_ok=True)

        try:
            self._start_service(
                "warehouse",
                python_module_command(
                    "ml_lifecycle.local.warehouse_server", "--data-dir", str(self.layout.warehouse_data)
                ),
            )
            self._start_service(
                "kafka",
                python_module_command("ml_lifecycle.local.kafka_broker", "--topic", self.config.kafka.topic),
            )
            if self.with_aws:
                self._start_service(
                    "aws",
                    python_module_command(
                        "ml_lifecycle.local.aws_emulator",
                        "--state-dir",
                        str(self.layout.aws_state),
                        "--serving-dir",
                        str(PROJECT_ROOT / "include" / "serving"),
                    ),
                )
            bootstrap_warehouse(self.connection_env())
            if self.with_aws:
                bootstrap_aws(self.config, self.services["aws"].info["endpoint_url"])
            if self.with_sink:
                self._start_service(
                    "sink",
                    python_module_command(
                        "ml_lifecycle.local.sink",
                        "--session-timeout-ms",
                        str(SINK_SESSION_TIMEOUT_MS),
                        "--status-file",
                        str(self.layout.run / "sink-status.json"),
                        "--work-dir",
                        str(self.layout.sink_work),
                    ),
                    env=self.connection_env(),
                )
            if self.with_airflow:
                self.start_airflow()
            self.write_env_file()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_service(
        self, name: str, command: list[str], *, env: Mapping[str, str] | None = None, wait_ready: bool = True
    ) -> ServiceProcess:
        full_env = {**os.environ, **(env or {}), STACK_ID_ENV: self.stack_id}
        service = start_service(
            name,
            command,
            run_dir=self.layout.run,
            log_dir=self.layout.logs,
            env=full_env,
            wait_ready=wait_ready,
            timeout_s=AIRFLOW_START_TIMEOUT_S if name in AIRFLOW_COMPONENTS else 60.0,
        )
        self.services[name] = service
        self._save_state()
        return service

    def _save_state(self) -> None:
        state = {
            "root": str(self.root),
            "stack_id": self.stack_id,
            "services": {
                name: {"pgid": service.pid, **service.info} for name, service in self.services.items()
            },
        }
        self.layout.state_file.write_text(json.dumps(state, indent=2), encoding="utf-8")

    # --------------------------------------------------------------- Airflow

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self._api_port}"

    def start_airflow(self) -> None:
        """Start the Airflow components. A stack started without them calls this after ``start()``."""
        if "scheduler" in self.services:
            return
        self.with_airflow = True
        self._api_port = self.api_port or free_port()
        home = self.layout.airflow_home
        home.mkdir(parents=True, exist_ok=True)
        passwords_file = home / "passwords.json"
        if passwords_file.exists():
            self.airflow_password = json.loads(passwords_file.read_text(encoding="utf-8"))[AIRFLOW_USER]
        else:
            self.airflow_password = secrets.token_urlsafe(12)
            passwords_file.write_text(json.dumps({AIRFLOW_USER: self.airflow_password}), encoding="utf-8")
            passwords_file.chmod(0o600)
        self._airflow_env = self.airflow_env()

        env = {**os.environ, **self.connection_env(), **self._airflow_env}
        migrate = subprocess.run(
            [airflow_executable(), "db", "migrate"], env=env, capture_output=True, text=True, check=False
        )
        if migrate.returncode != 0:
            raise ServiceStartError(
                f"airflow db migrate failed:\n{migrate.stdout[-3000:]}\n{migrate.stderr[-3000:]}"
            )

        for component in AIRFLOW_COMPONENTS:
            arguments = [airflow_executable(), component]
            if component == "api-server":
                arguments += ["--port", str(self._api_port), "--host", "127.0.0.1"]
            self._start_service(
                component, arguments, env={**self.connection_env(), **self._airflow_env}, wait_ready=False
            )
        self.wait_for_airflow()
        self.write_env_file()

    def airflow_env(self) -> dict[str, str]:
        """Return the Airflow settings of this stack as environment variables."""
        home = self.layout.airflow_home
        api_port = self._api_port
        return {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # Each LocalExecutor worker is a process of about 130 MB; a few fit a small machine.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            # SQLite allows one writer at a time. While the scheduler writes,
            # a CLI call such as `airflow backfill create` waits up to 30 s
            # for the lock, not the driver's default of 5 s.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}?timeout=30",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret(),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        }

    def _jwt_secret(self) -> str:
        secret_file = self.layout.airflow_home / "jwt_secret"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_urlsafe(32), encoding="utf-8")
            secret_file.chmod(0o600)
        return secret_file.read_text(encoding="utf-8").strip()

    def wait_for_airflow(self, timeout_s: float = AIRFLOW_START_TIMEOUT_S) -> None:
        """Wait until the API responds and the DAG processor has parsed all six DAGs without import errors."""
        client = AirflowClient(self.api_url, AIRFLOW_USER, self.airflow_password or "")
        deadline = time.monotonic() + timeout_s
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            for name in AIRFLOW_COMPONENTS:
                process = self.services[name].process
                if process.poll() is not None:
                    raise ServiceStartError(
                        f"airflow {name} exited with code {process.returncode}; see {self.services[name].log_path}"
                    )
            try:
                errors = client.get("/api/v2/importErrors")["import_errors"]
                if errors:
                    details = "\n".join(
                        f"{error['filename']}: {error['stack_trace'][-800:]}" for error in errors
                    )
                    raise ServiceStartError(f"the DAG processor reports import errors:\n{details}")
                dag_ids = {dag["dag_id"] for dag in client.get("/api/v2/dags", limit=100)["dags"]}
                if set(DAG_IDS) <= dag_ids:
                    log.info("Airflow is up at %s with the DAGs %s", self.api_url, sorted(dag_ids))
                    return
                last_error = f"DAGs parsed so far: {sorted(dag_ids)}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError) as err:
                last_error = str(err)
            time.sleep(2)
        raise ServiceStartError(f"Airflow was not ready after {timeout_s:.0f} s: {last_error}")

    # ------------------------------------------------------------ connections

    def connection_env(self) -> dict[str, str]:
        """Return the ``AIRFLOW_CONN_*`` variables and the configuration path for this stack."""
        warehouse, kafka = self.services.get("warehouse"), self.services.get("kafka")
        aws = self.services.get("aws")
        env = {
            "ML_LIFECYCLE_CONFIG": str(self.config_path),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        if warehouse is not None:
            env["AIRFLOW_CONN_SNOWFLAKE_DEFAULT"] = json.dumps(
                {
                    "conn_type": "snowflake",
                    "login": "local",
                    "password": "local",
                    "schema": self.config.warehouse.raw_schema,
                    "extra": {
                        "account": "local",
                        "database": self.config.warehouse.database,
                        "warehouse": "COMPUTE_WH",
                        "role": "SYSADMIN",
                        "host": "127.0.0.1",
                        "port": warehouse.info["port"],
                        "protocol": "http",
                        "login_timeout": 30,
                        "network_timeout": 300,
                    },
                }
            )
        if kafka is not None:
            env["AIRFLOW_CONN_KAFKA_DEFAULT"] = json.dumps(
                {"conn_type": "kafka", "extra": {"bootstrap.servers": kafka.info["bootstrap_servers"]}}
            )
        if aws is not None:
            env["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(
                {
                    "conn_type": "aws",
                    "login": AWS_ACCESS_KEY,
                    "password": AWS_SECRET_KEY,
                    "extra": {
                        "endpoint_url": aws.info["endpoint_url"],
                        "region_name": self.config.aws.region,
                    },
                }
            )
        return env

    def write_env_file(self) -> Path:
        """Write ``root/env``: ``source`` it to run ``airflow`` commands against this stack."""
        variables = {**self.connection_env()}
        if self.with_airflow:
            variables.update(self._airflow_env)
        variables["PATH"] = f"{Path(sys.executable).parent}:$PATH"
        lines = ["# Written by the local stack; source it to use the running services."]
        for name, value in variables.items():
            quoted = f'"{value}"' if name == "PATH" else shlex.quote(value)
            lines.append(f"export {name}={quoted}")
        self.layout.env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.layout.env_file.chmod(0o600)
        return self.layout.env_file

    def wait_for_sink(self, expected: int, timeout_s: float = 300.0) -> dict[str, Any]:
        """Wait until the sink reports ``expected`` consumed messages and return its running totals."""
        status_file = self.layout.run / "sink-status.json"
        deadline = time.monotonic() + timeout_s
        totals: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if status_file.exists():
                totals = json.loads(status_file.read_text(encoding="utf-8"))
                if totals.get("messages", 0) >= expected:
                    return totals
            time.sleep(0.5)
        raise TimeoutError(
            f"the sink consumed {totals.get('messages', 0):,} of {expected:,} events in {timeout_s:.0f} s; "
            f"see {self.layout.logs / 'sink.log'}"
        )

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Stop every service this object started, Airflow first and the warehouse last."""
        for name in reversed(list(self.services)):
            service = self.services.pop(name)
            service.stop()
            log.info("Stopped %s", name)
        stop_stray_processes(self.stack_id)
        self.layout.state_file.unlink(missing_ok=True)


def stop_stack(root: Path = DEFAULT_ROOT) -> list[str]:
    """Stop the services recorded in ``root/stack.json``; return their names."""
    state_file = StackLayout(root).state_file
    if not state_file.exists():
        return []
    state = json.loads(state_file.read_text(encoding="utf-8"))
    stopped = []
    for name, service in reversed(list(state.get("services", {}).items())):
        stop_process_group(int(service["pgid"]))
        stopped.append(name)
    if state.get("stack_id"):
        stop_stray_processes(state["stack_id"])
    state_file.unlink(missing_ok=True)
    return stopped


def stop_stray_processes(stack_id: str, timeout_s: float = 10.0) -> list[int]:
    """Stop processes of a stack that outlived their process group; return their pids."""
    import psutil

    strays = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get(STACK_ID_ENV) == stack_id:
                strays.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    for process in strays:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(strays, timeout=timeout_s)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    if strays:
        log.warning(
            "Stopped %d processes of the stack outside its process groups: %s",
            len(strays),
            [p.pid for p in strays],
        )
    return [process.pid for process in strays]


def airflow_executable() -> str:
    """Return the ``airflow`` command of this interpreter's environment."""
    candidate = Path(sys.executable).parent / "airflow"
    return str(candidate) if candidate.exists() else "airflow"


def bootstrap_warehouse(env: Mapping[str, str]) -> None:
    """Create the warehouse objects from ``include/sql/schema``; every statement is idempotent."""
    from ml_lifecycle.config import config_path
    from ml_lifecycle.hooks.warehouse import WarehouseHook, render_statements, schema_files, sql_params

    with _environment(env):
        config = parse_config(config_path())
        hook = WarehouseHook(snowflake_conn_id=config.warehouse.conn_id)
        statements = render_statements(schema_files(), sql_params(config))
        with hook.get_conn() as conn:
            cursor = conn.cursor()
            for statement in statements:
                cursor.execute(statement)
    log.info("Applied %d schema statements to the warehouse", len(statements))


def bootstrap_aws(config: LifecycleConfig, endpoint_url: str) -> None:
    """Create the bucket, alert topic and model package group that production provisions beforehand."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id=AWS_ACCESS_KEY, aws_secret_access_key=AWS_SECRET_KEY, region_name=config.aws.region
    )
    s3 = session.client("s3", endpoint_url=endpoint_url)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(
            Bucket=config.aws.artifact_bucket,
            CreateBucketConfiguration={"LocationConstraint": config.aws.region},
        )
    topic_name = config.aws.alert_topic_arn.rsplit(":", 1)[-1]
    session.client("sns", endpoint_url=endpoint_url).create_topic(Name=topic_name)
    sagemaker = session.client("sagemaker", endpoint_url=endpoint_url)
    groups = sagemaker.list_model_package_groups(NameContains=config.aws.model_package_group)
    if not any(
        group["ModelPackageGroupName"] == config.aws.model_package_group
        for group in groups["ModelPackageGroupSummaryList"]
    ):
        sagemaker.create_model_package_group(
            ModelPackageGroupName=config.aws.model_package_group,
            ModelPackageGroupDescription="Weekly demand forecasts per stock code",
        )
    log.info("Created the S3 bucket, SNS topic and model package group in the AWS emulator")


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Any:
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class AirflowClient:
    """A small client of the Airflow 3 REST API (``/api/v2``) with a JWT from ``/auth/token``."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback URL of the stack
                payload = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", errors="replace")[:2000]
            raise RuntimeError(f"{method} {path} failed with HTTP {err.code}: {detail}") from err
        return json.loads(payload) if payload else None

    def token(self) -> str:
        if self._token is None:
            answer = self._request(
                "POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False
            )
            self._token = answer["access_token"]
        return self._token

    def get(self, path: str, **query: Any) -> Any:
        if query:
            path += "?" + urllib.parse.urlencode(query)
        return self._request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self._request("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self._request("PATCH", path, body)
