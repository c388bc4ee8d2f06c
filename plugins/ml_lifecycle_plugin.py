"""Register the lifecycle's operator extra links with Airflow.

The API server rebuilds operators from serialized DAGs and keeps only the
extra links of classes that a plugin registers.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from ml_lifecycle.links import DataDocsLink, ModelReportLink


class MlLifecyclePlugin(AirflowPlugin):
    name = "ml_lifecycle"
    # AirflowPlugin declares this as a class attribute list; plugins set it the same way.
    operator_extra_links = [DataDocsLink(), ModelReportLink()]  # noqa: RUF012
