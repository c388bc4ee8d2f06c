INSERT INTO {{ params.tables.validation_runs }} (
    DAG_RUN_ID, SUITE_NAME, WINDOW_START, WINDOW_END, SUCCESS,
    EVALUATED_EXPECTATIONS, UNSUCCESSFUL_EXPECTATIONS, RESULT, VALIDATED_AT
)
SELECT
    %(dag_run_id)s, %(suite_name)s, %(window_start)s, %(window_end)s, %(success)s,
    %(evaluated)s, %(unsuccessful)s, PARSE_JSON(%(result)s), CURRENT_TIMESTAMP()::TIMESTAMP_NTZ
