"""Operator extra links: buttons in the task view that open what a task produced."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey


class _XComLink(BaseOperatorLink):
    """A link whose URL the task stores in XCom under ``xcom_key`` while it runs."""

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(key=self.xcom_key, ti_key=ti_key)
        return str(value) if value else ""

    @classmethod
    def persist(cls, context: Context, url: str) -> None:
        """Store the URL of this run's link."""
        context["ti"].xcom_push(key=cls().xcom_key, value=url)


class DataDocsLink(_XComLink):
    """Great Expectations Data Docs of the validation run."""

    name = "Data Docs"


class ModelReportLink(_XComLink):
    """Training report of the registered model version."""

    name = "Model report"
