-- Feature rows of the monitored weeks: known demand for the performance check,
-- and the forecast inputs of the following week for the data drift check.
SELECT *
FROM {{ params.tables.weekly_demand }}
WHERE WEEK_START >= %(first_week)s::DATE
  AND WEEK_START <= %(forecast_week)s::DATE
ORDER BY WEEK_START, SKU_RANK
