DELETE FROM {{ params.tables.weekly_demand }}
WHERE WEEK_START = %(week_start)s::DATE
