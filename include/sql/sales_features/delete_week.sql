-- Remove the rows of one week before they are built again. The forecast row
-- of the week after a window (%(target_known)s is false) only replaces rows
-- whose target is still unknown, so re-running an earlier week never erases
-- a later week that has already been built with its target.
DELETE FROM {{ params.tables.weekly_demand }}
WHERE WEEK_START = %(week_start)s::DATE
  AND (%(target_known)s OR QUANTITY IS NULL)
