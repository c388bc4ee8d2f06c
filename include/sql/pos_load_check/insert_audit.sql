INSERT INTO {{ params.tables.load_checks }} (
    DAG_RUN_ID, WINDOW_START, WINDOW_END, KAFKA_TOPIC, KAFKA_PARTITION,
    LOG_START_OFFSET, LOG_END_OFFSET, COMMITTED_OFFSET, LANDED_ROWS, QUARANTINED_ROWS,
    DISTINCT_OFFSETS, MISSING_OFFSETS, DUPLICATE_OFFSETS, CONSUMER_LAG, COMMIT_PENDING, WINDOW_ROWS,
    PASSED, PROBLEMS, CHECKED_AT
) VALUES (
    %(dag_run_id)s, %(window_start)s, %(window_end)s, %(topic)s, %(partition)s,
    %(log_start)s, %(log_end)s, %(committed)s, %(landed_rows)s, %(quarantined_rows)s,
    %(distinct_offsets)s, %(missing_offsets)s, %(duplicate_rows)s, %(consumer_lag)s, %(commit_pending)s, %(window_rows)s,
    %(passed)s, %(problems)s, CURRENT_TIMESTAMP()::TIMESTAMP_NTZ
)
