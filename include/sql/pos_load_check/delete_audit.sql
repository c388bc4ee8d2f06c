-- A retried or re-run check replaces the rows it wrote before.
DELETE FROM {{ params.tables.load_checks }}
WHERE DAG_RUN_ID = %(dag_run_id)s
