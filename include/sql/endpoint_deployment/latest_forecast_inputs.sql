-- Feature rows of the newest week whose demand is not known yet: the inputs
-- of the next forecast, largest products first.
SELECT *
FROM {{ params.tables.weekly_demand }}
WHERE QUANTITY IS NULL
  AND WEEK_START = (SELECT MAX(WEEK_START) FROM {{ params.tables.weekly_demand }} WHERE QUANTITY IS NULL)
ORDER BY SKU_RANK
LIMIT %(limit)s
