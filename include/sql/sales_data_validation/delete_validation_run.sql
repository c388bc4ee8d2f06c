-- A retried or re-run validation replaces the row it wrote before.
DELETE FROM {{ params.tables.validation_runs }}
WHERE DAG_RUN_ID = %(dag_run_id)s
  AND SUITE_NAME = %(suite_name)s
