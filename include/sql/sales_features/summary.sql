-- Rows and stock codes the run wrote, by week.
SELECT
    WEEK_START,
    COUNT(*) AS ROWS_WRITTEN,
    COUNT(DISTINCT STOCK_CODE) AS SKUS,
    SUM(IFF(QUANTITY IS NULL, 1, 0)) AS FORECAST_ROWS
FROM {{ params.tables.weekly_demand }}
WHERE WEEK_START BETWEEN %(first_week)s::DATE AND %(forecast_week)s::DATE
GROUP BY WEEK_START
ORDER BY WEEK_START
