"""Build the weekly demand features of a window in the warehouse."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ml_lifecycle.exceptions import NotEnoughData
from ml_lifecycle.hooks.warehouse import WarehouseHook, render_sql_file, sql_params
from ml_lifecycle.operators.base import LifecycleOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

SQL_DIR = "sales_features"


class SnowflakeWeeklyFeaturesOperator(LifecycleOperator):
    """Rebuild ``FEATURES.WEEKLY_DEMAND`` for every week of the run's window.

    Each week is deleted and inserted again inside one transaction, so running
    a week twice leaves the same rows. The features of week t come only from
    sales before t (see ``include/sql/sales_features/insert_week.sql``). The
    week after the window gets its feature row too, with a NULL target: it is
    the input of the next forecast and is rebuilt with its target once that
    week is run. A week already built with its target keeps it, so re-running
    an earlier week changes no later week.

    :param snowflake_conn_id: Airflow connection to Snowflake (templated).
    :param top_n_skus: how many stock codes to keep; defaults to ``features.top_n_skus`` (templated).
    :raises NotEnoughData: if a week of the window produced no feature rows.
    """

    template_fields: tuple[str, ...] = (*LifecycleOperator.template_fields, "snowflake_conn_id", "top_n_skus")
    ui_color = "#e3ecfa"

    def __init__(
        self, *, snowflake_conn_id: str | None = None, top_n_skus: int | str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.snowflake_conn_id = snowflake_conn_id
        self.top_n_skus = top_n_skus

    def execute(self, context: Context) -> dict[str, Any]:
        config = self.config
        window = self.window(context)
        top_n = int(self.top_n_skus) if self.top_n_skus not in (None, "") else config.features.top_n_skus
        if top_n < 1:
            raise ValueError(f"invalid top_n_skus {self.top_n_skus!r}: expected a positive whole number")

        params = sql_params(config)
        delete_week = render_sql_file(f"{SQL_DIR}/delete_week.sql", params)
        insert_week = render_sql_file(f"{SQL_DIR}/insert_week.sql", params)
        forecast_week = window.week_starts[-1] + dt.timedelta(days=7)
        warehouse = WarehouseHook(snowflake_conn_id=self.snowflake_conn_id or config.warehouse.conn_id)

        weeks = [(week, True) for week in window.week_starts] + [(forecast_week, False)]
        for week_start, target_known in weeks:
            bindings = {"week_start": week_start.isoformat(), "top_n": top_n, "target_known": target_known}
            deleted, inserted = warehouse.run_script([delete_week, insert_week], bindings)
            if not target_known and not deleted and not inserted:
                self.log.info("Week %s was built with its target before; kept as it is", week_start)
                continue
            self.log.info(
                "Week %s: replaced %d rows with %d (%s)",
                week_start,
                deleted,
                inserted,
                "training rows" if target_known else "forecast inputs, target not known yet",
            )

        per_week = warehouse.fetch_dicts(
            render_sql_file(f"{SQL_DIR}/summary.sql", params),
            {"first_week": window.week_starts[0].isoformat(), "forecast_week": forecast_week.isoformat()},
        )
        empty_weeks = sorted(
            {week for week, _ in weeks} - {row["WEEK_START"] for row in per_week if row["ROWS_WRITTEN"]}
        )
        if empty_weeks:
            raise NotEnoughData(
                f"no feature rows for weeks {', '.join(str(week) for week in empty_weeks)}: no product sold in "
                "the 52 weeks before them; check that the window lies inside the landed data"
            )

        window_weeks = set(window.week_starts)
        training_rows = sum(int(row["ROWS_WRITTEN"]) for row in per_week if row["WEEK_START"] in window_weeks)
        summary = {
            "window": str(window),
            "weeks": [str(week) for week in window.week_starts],
            "forecast_week": forecast_week.isoformat(),
            "rows": training_rows,
            "forecast_rows": sum(
                int(row["FORECAST_ROWS"]) for row in per_week if row["WEEK_START"] == forecast_week
            ),
            "skus": max(int(row["SKUS"]) for row in per_week),
            "top_n_skus": top_n,
        }
        self.log.info("Features built: %s", summary)
        self.emit_outlet_events(context, window, forecast_week=summary["forecast_week"], rows=training_rows)
        return summary
