-- Per partition of the topic: rows landed or quarantined, distinct offsets and
-- the offset range the warehouse accounts for.
WITH accounted AS (
    SELECT
        RECORD_METADATA:partition::INTEGER AS KAFKA_PARTITION,
        RECORD_METADATA:offset::INTEGER AS KAFKA_OFFSET,
        1 AS IS_LANDED
    FROM {{ params.tables.pos_transactions }}
    WHERE RECORD_METADATA:topic::VARCHAR = %(topic)s
    UNION ALL
    SELECT
        RECORD_METADATA:partition::INTEGER,
        RECORD_METADATA:offset::INTEGER,
        0
    FROM {{ params.tables.pos_quarantine }}
    WHERE RECORD_METADATA:topic::VARCHAR = %(topic)s
)
SELECT
    KAFKA_PARTITION,
    SUM(IS_LANDED) AS LANDED_ROWS,
    SUM(1 - IS_LANDED) AS QUARANTINED_ROWS,
    COUNT(DISTINCT KAFKA_OFFSET) AS DISTINCT_OFFSETS,
    MIN(KAFKA_OFFSET) AS MIN_OFFSET,
    MAX(KAFKA_OFFSET) AS MAX_OFFSET
FROM accounted
GROUP BY KAFKA_PARTITION
ORDER BY KAFKA_PARTITION
