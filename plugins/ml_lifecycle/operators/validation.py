"""Run a Great Expectations suite as SQL in the warehouse on one window of POS lines."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_lifecycle.exceptions import ConfigError, ValidationFailed
from ml_lifecycle.hooks.warehouse import WarehouseHook, render_sql_file, split_statements, sql_params
from ml_lifecycle.links import DataDocsLink
from ml_lifecycle.operators.base import LifecycleOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ml_lifecycle.windows import Window

SQL_DIR = "sales_data_validation"
DATA_DOCS_SITE = "lifecycle_data_docs"
FAILURE_MODES = ("fail", "warn")


def load_suite_file(path: Path) -> dict[str, Any]:
    """Read a suite file and check the parts this operator relies on.

    Great Expectations 1.24 only logs an expectation it cannot parse and drops
    it from the suite, so the file is checked here to make such a mistake fail.
    """
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(
            f"expectation suite {path} not found; set validation.suite in the configuration"
        ) from err
    except json.JSONDecodeError as err:
        raise ConfigError(f"expectation suite {path} is not valid JSON: {err}") from err

    if not isinstance(suite.get("name"), str) or not isinstance(suite.get("expectations"), list):
        raise ConfigError(f"expectation suite {path} must have a 'name' string and an 'expectations' list")
    failure_mode = suite.get("meta", {}).get("on_failure", "fail")
    if failure_mode not in FAILURE_MODES:
        raise ConfigError(
            f"expectation suite {path}: meta.on_failure is {failure_mode!r}; expected one of {FAILURE_MODES}"
        )
    return suite


def summarize_results(result: Any) -> dict[str, Any]:
    """Turn a GX validation result into plain data: totals and one entry per expectation."""
    expectations = []
    for item in result.results:
        config = item.expectation_config
        details = item.result or {}
        error = _raised_exception_message(item.exception_info or {})
        expectations.append(
            {
                "expectation": config.type,
                "column": config.kwargs.get("column") or config.kwargs.get("column_list"),
                "success": bool(item.success),
                # GX reports SQL counts as floats; they are whole numbers.
                "unexpected_count": _whole(details.get("unexpected_count")),
                "unexpected_percent": details.get("unexpected_percent"),
                "observed_value": details.get("observed_value"),
                "sample_unexpected": list(dict.fromkeys(details.get("partial_unexpected_list") or []))[:5],
                "error": error,
            }
        )
    statistics = result.statistics
    return {
        "success": bool(result.success),
        "evaluated_expectations": int(statistics["evaluated_expectations"]),
        "successful_expectations": int(statistics["successful_expectations"]),
        "unsuccessful_expectations": int(statistics["unsuccessful_expectations"]),
        "expectations": expectations,
    }


def _whole(value: Any) -> int | None:
    return None if value is None else int(value)


def _raised_exception_message(exception_info: Mapping[str, Any]) -> str | None:
    """Return the message of an exception GX caught while computing an expectation, if any.

    GX reports it either flat (``raised_exception``, ``exception_message``) or
    keyed by the metric that failed, with the same fields inside.
    """
    if exception_info.get("raised_exception"):
        return str(exception_info.get("exception_message"))
    for value in exception_info.values():
        if isinstance(value, Mapping) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def describe_failures(summary: Mapping[str, Any]) -> str:
    """List every failed expectation with its column and unexpected count, one per line."""
    lines = []
    for item in summary["expectations"]:
        if item["success"]:
            continue
        column = f" on {item['column']}" if item["column"] else ""
        if item["error"]:
            detail = f"raised an error: {item['error']}"
        elif item["unexpected_count"] is not None:
            detail = (
                f"{item['unexpected_count']:,} unexpected values ({item['unexpected_percent'] or 0:.3f}%)"
            )
            if item["sample_unexpected"]:
                detail += f", for example {item['sample_unexpected']}"
        else:
            detail = f"observed {item['observed_value']!r}"
        lines.append(f"- {item['expectation']}{column}: {detail}")
    return "\n".join(lines)


class GreatExpectationsSqlOperator(LifecycleOperator):
    """Validate the run's window of landed POS lines with a Great Expectations suite, in the warehouse.

    The suite runs through a GX SQL datasource on a query over
    ``STAGING.POS_LINES`` limited to the window, so the rows are never pulled
    into the worker. ``min_rows`` from the configuration is passed as the
    suite parameter ``min_rows``, so an empty window fails. The summary is
    stored in ``AUDIT.VALIDATION_RUNS``, and the Data Docs site of every run goes
    to S3; the task log and the "Data Docs" extra link give its address.

    :param snowflake_conn_id: Airflow connection to Snowflake (templated).
    :param aws_conn_id: Airflow connection to AWS, for the Data Docs in S3 (templated).
    :param suite_path: suite JSON file; defaults to ``validation.suite`` (templated).
    :raises ValidationFailed: if an expectation fails and the suite's
        ``meta.on_failure`` is ``fail`` (the default).
    """

    template_fields: tuple[str, ...] = (
        *LifecycleOperator.template_fields,
        "snowflake_conn_id",
        "aws_conn_id",
        "suite_path",
    )
    operator_extra_links = (DataDocsLink(),)
    ui_color = "#fff3d6"

    def __init__(
        self,
        *,
        snowflake_conn_id: str | None = None,
        aws_conn_id: str | None = None,
        suite_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.snowflake_conn_id = snowflake_conn_id
        self.aws_conn_id = aws_conn_id
        self.suite_path = suite_path

    def execute(self, context: Context) -> dict[str, Any]:
        config = self.config
        window = self.window(context)
        suite_file = Path(self.suite_path) if self.suite_path else config.validation.suite_path()
        suite_definition = load_suite_file(suite_file)
        failure_mode = suite_definition.get("meta", {}).get("on_failure", "fail")
        warehouse = WarehouseHook(snowflake_conn_id=self.snowflake_conn_id or config.warehouse.conn_id)

        # GX 1.24 accepts a query asset only if its text starts with SELECT, so
        # the file's comment lines are dropped.
        (query,) = split_statements(
            render_sql_file(
                f"{SQL_DIR}/window_lines.sql", sql_params(config, window=_window_literals(window))
            )
        )
        with tempfile.TemporaryDirectory(prefix="data-docs-") as docs_dir:
            result = self.run_suite(
                warehouse,
                suite_definition,
                query,
                {"min_rows": config.validation.min_rows},
                docs_dir=Path(docs_dir),
                run_name=context["run_id"],
            )
            docs_url = self.publish_data_docs(context, config, Path(docs_dir))
        summary = summarize_results(result)
        summary.update(
            suite=suite_definition["name"], window=str(window), on_failure=failure_mode, data_docs=docs_url
        )
        self.store_summary(warehouse, config, context, window, summary)

        self.log.info(
            "Suite %s on %s: success=%s, %d of %d expectations unsuccessful",
            summary["suite"],
            window,
            summary["success"],
            summary["unsuccessful_expectations"],
            summary["evaluated_expectations"],
        )
        if not summary["success"]:
            message = (
                f"suite {summary['suite']} failed on {window}: {summary['unsuccessful_expectations']} of "
                f"{summary['evaluated_expectations']} expectations unsuccessful:\n{describe_failures(summary)}"
            )
            if failure_mode == "fail":
                raise ValidationFailed(message)
            self.log.warning("Suite runs in warn mode, so the task succeeds: %s", message)

        self.emit_outlet_events(
            context, window, validation_success=summary["success"], suite=summary["suite"]
        )
        return summary

    def run_suite(
        self,
        warehouse: WarehouseHook,
        suite_definition: dict[str, Any],
        query: str,
        parameters: dict[str, Any],
        *,
        docs_dir: Path,
        run_name: str,
    ) -> Any:
        """Validate ``query`` through a GX checkpoint on the warehouse connection, writing Data Docs.

        :param docs_dir: directory the Data Docs site is written to.
        :param run_name: name of the validation run in the docs, the DAG run id.
        :return: the validation result of the suite.
        """
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.add_data_docs_site(
            site_name=DATA_DOCS_SITE,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        account = warehouse.get_connection(warehouse.get_conn_id()).extra_dejson.get("account", "account")
        # The engine gets its connections from the hook, so the connector
        # options of the Airflow connection (host, port, protocol) apply.
        # SQLDatasource passes `kwargs` to sqlalchemy.create_engine; the
        # generated add_sql signature of GX 1.24 does not declare it.
        datasource = context.data_sources.add_sql(  # type: ignore[call-arg]
            name="warehouse",
            connection_string=f"snowflake://user@{account}",
            kwargs={"creator": warehouse.get_conn},
        )
        asset = datasource.add_query_asset(name="window_lines", query=query)
        batch_definition = asset.add_batch_definition_whole_table("window")

        suite = gx.ExpectationSuite(
            name=suite_definition["name"],
            expectations=suite_definition["expectations"],
            meta=suite_definition.get("meta"),
        )
        if len(suite.expectations) != len(suite_definition["expectations"]):
            raise ConfigError(
                f"suite {suite_definition['name']}: Great Expectations accepted {len(suite.expectations)} of "
                f"{len(suite_definition['expectations'])} expectations; check the log for the invalid ones"
            )
        suite = context.suites.add(suite)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite.name}_window", data=batch_definition, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{suite.name}_checkpoint",
                validation_definitions=[definition],
                actions=[
                    gx.checkpoint.UpdateDataDocsAction(name="update_data_docs", site_names=[DATA_DOCS_SITE])
                ],
                result_format="SUMMARY",
            )
        )
        result = checkpoint.run(expectation_parameters=parameters, run_id=RunIdentifier(run_name=run_name))
        (validation,) = result.run_results.values()
        return validation

    def publish_data_docs(self, context: Context, config: Any, docs_dir: Path) -> str:
        """Upload the Data Docs site to S3, link the run's validation page and return its URL."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from ml_lifecycle.aws.s3 import browser_url, upload_directory

        client = S3Hook(aws_conn_id=self.aws_conn_id or config.aws.conn_id).get_conn()
        bucket = config.aws.artifact_bucket
        # One complete site per run, so a later run does not replace this one's index.
        run_path = re.sub(r"[^A-Za-z0-9._-]", "_", context["run_id"])
        prefix = f"{config.validation.data_docs_prefix}/{context['dag'].dag_id}/{run_path}"
        uploaded = upload_directory(client, docs_dir, bucket, prefix)

        pages = sorted(docs_dir.glob("validations/**/*.html"), key=lambda page: page.stat().st_mtime)
        page = pages[-1].relative_to(docs_dir).as_posix() if pages else "index.html"
        url = browser_url(client, bucket, f"{prefix}/{page}")
        DataDocsLink.persist(context, url)
        self.log.info(
            "Data Docs (%d files) at s3://%s/%s; this run's page: %s", uploaded, bucket, prefix, url
        )
        return url

    def store_summary(
        self, warehouse: WarehouseHook, config: Any, context: Context, window: Window, summary: dict[str, Any]
    ) -> None:
        insert = render_sql_file(f"{SQL_DIR}/insert_validation_run.sql", sql_params(config))
        delete = render_sql_file(f"{SQL_DIR}/delete_validation_run.sql", sql_params(config))
        warehouse.run_script(
            [delete, insert],
            {
                "dag_run_id": context["run_id"],
                "suite_name": summary["suite"],
                "window_start": window.local_start.isoformat(sep=" "),
                "window_end": window.local_end.isoformat(sep=" "),
                "success": summary["success"],
                "evaluated": summary["evaluated_expectations"],
                "unsuccessful": summary["unsuccessful_expectations"],
                "result": json.dumps(summary, default=str),
            },
        )


def _window_literals(window: Window) -> dict[str, str]:
    # GX runs the query asset itself and cannot bind parameters, so the window
    # bounds are written into the SQL. They come from datetimes, never from
    # user text.
    return {
        "start": window.local_start.strftime("%Y-%m-%d %H:%M:%S"),
        "end": window.local_end.strftime("%Y-%m-%d %H:%M:%S"),
    }
