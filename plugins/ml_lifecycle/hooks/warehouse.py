"""Snowflake hook that can also reach an HTTP endpoint, and SQL file rendering."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

from ml_lifecycle.config import PROJECT_ROOT, LifecycleConfig

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection

SQL_ROOT = PROJECT_ROOT / "include" / "sql"

# Connection extras this hook adds to the ones SnowflakeHook passes on.
_EXTRA_CONNECTOR_OPTIONS = ("protocol", "login_timeout", "network_timeout")


class WarehouseHook(SnowflakeHook):
    """Interact with Snowflake, honouring ``protocol`` in the connection extra.

    ``SnowflakeHook`` of apache-airflow-providers-snowflake 6.20.0 passes
    ``host`` and ``port`` from the extra to the connector but not
    ``protocol``, so it cannot reach an endpoint served over plain HTTP, such
    as a local Snowflake emulator. Connections to real Snowflake need no
    change: without ``protocol`` the connector uses HTTPS.

    :param snowflake_conn_id: Airflow connection of type ``snowflake``.
    """

    hook_name = "Snowflake (lifecycle)"

    def _get_conn_params(self) -> dict[str, Any]:
        params: dict[str, Any] = dict(super()._get_conn_params())
        extra = self.get_connection(self.get_conn_id()).extra_dejson
        for option in _EXTRA_CONNECTOR_OPTIONS:
            if extra.get(option) not in (None, ""):
                params[option] = extra[option]
        return params

    def get_conn(self) -> SnowflakeConnection:
        """Return a connector connection with the extra options applied."""
        from snowflake.connector import connect

        return connect(**self._get_conn_params())

    def run_script(self, statements: Sequence[str], parameters: Mapping[str, Any] | None = None) -> list[int]:
        """Run ``statements`` with the same parameters in one transaction and return the row count of each.

        Nothing is committed unless every statement succeeds.
        """
        return self.run_in_transaction([(statement, parameters) for statement in statements])

    def run_in_transaction(self, steps: Sequence[tuple[str, Mapping[str, Any] | None]]) -> list[int]:
        """Run (statement, parameters) pairs in one transaction and return the row count of each."""
        counts: list[int] = []
        with self.get_conn() as conn:
            cursor = conn.cursor()
            try:
                cursor.execute("BEGIN")
                for statement, parameters in steps:
                    cursor.execute(statement, _bindings_for(statement, parameters))
                    counts.append(cursor.rowcount or 0)
                cursor.execute("COMMIT")
            except Exception:
                cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.close()
        self.log.info("Ran %d statements in one transaction; row counts %s", len(steps), counts)
        return counts

    def fetch_dicts(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one query and return its rows as dictionaries keyed by upper-case column name."""
        with self.get_conn() as conn:
            cursor = conn.cursor()
            try:
                cursor.execute(sql, _bindings_for(sql, parameters))
                columns = [column[0].upper() for column in cursor.description or []]
                return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
            finally:
                cursor.close()


def _bindings_for(statement: str, parameters: Mapping[str, Any] | None) -> dict[str, Any] | None:
    # The connector formats pyformat placeholders with Python's % operator, so
    # a statement without placeholders must get no parameters: a literal % in
    # it would otherwise be read as a format directive.
    if parameters and "%(" in statement:
        return dict(parameters)
    return None


def sql_params(config: LifecycleConfig, **extra: Any) -> dict[str, Any]:
    """Return the Jinja ``params`` that SQL files are rendered with."""
    return {"tables": config.warehouse.tables(), "features": config.features.model_dump(), **extra}


def render_sql_file(path: str | Path, params: Mapping[str, Any]) -> str:
    """Render one SQL file of ``include/sql`` with identifiers from ``params``.

    Identifiers come from validated configuration; values are left as
    ``%(name)s`` placeholders for the connector to bind.
    """
    file_path = Path(path)
    if not file_path.is_absolute():
        file_path = SQL_ROOT / file_path
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701
    try:
        template = environment.from_string(file_path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"SQL file {file_path} not found; expected it under {SQL_ROOT}") from err
    return template.render(params=params)


def split_statements(script: str) -> list[str]:
    """Split a rendered SQL script on semicolons that end a line, dropping comments-only parts."""
    statements = []
    for chunk in script.split(";\n"):
        lines = [
            line for line in chunk.strip().splitlines() if line.strip() and not line.strip().startswith("--")
        ]
        if lines:
            statements.append("\n".join(lines).rstrip(";"))
    return statements


def render_statements(paths: Sequence[str | Path], params: Mapping[str, Any]) -> list[str]:
    """Render SQL files and return their statements in file order."""
    statements: list[str] = []
    for path in paths:
        statements.extend(split_statements(render_sql_file(path, params) + "\n"))
    return statements


def schema_files() -> list[Path]:
    """Return the DDL files that create the warehouse objects, in the order they must run."""
    return sorted((SQL_ROOT / "schema").glob("*.sql"))
