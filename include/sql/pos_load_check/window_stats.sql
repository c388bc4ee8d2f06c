-- Events of the run's window per partition, and the newest event time before
-- the window end. Event times are UK wall-clock times.
SELECT
    KAFKA_PARTITION,
    SUM(IFF(INVOICE_DATE >= %(window_start)s::TIMESTAMP_NTZ, 1, 0)) AS WINDOW_ROWS,
    MAX(INVOICE_DATE) AS NEWEST_EVENT
FROM {{ params.tables.pos_lines }}
WHERE KAFKA_TOPIC = %(topic)s
  AND INVOICE_DATE < %(window_end)s::TIMESTAMP_NTZ
GROUP BY KAFKA_PARTITION
ORDER BY KAFKA_PARTITION
