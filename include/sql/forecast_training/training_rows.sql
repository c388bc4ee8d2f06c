-- Feature rows of the training window whose target is known, oldest first.
SELECT *
FROM {{ params.tables.weekly_demand }}
WHERE WEEK_START BETWEEN %(first_week)s::DATE AND %(last_week)s::DATE
  AND QUANTITY IS NOT NULL
ORDER BY WEEK_START, STOCK_CODE
