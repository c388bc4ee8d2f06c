-- Offsets accounted more than once, landed twice or both landed and quarantined.
WITH accounted AS (
    SELECT
        RECORD_METADATA:partition::INTEGER AS KAFKA_PARTITION,
        RECORD_METADATA:offset::INTEGER AS KAFKA_OFFSET
    FROM {{ params.tables.pos_transactions }}
    WHERE RECORD_METADATA:topic::VARCHAR = %(topic)s
    UNION ALL
    SELECT
        RECORD_METADATA:partition::INTEGER,
        RECORD_METADATA:offset::INTEGER
    FROM {{ params.tables.pos_quarantine }}
    WHERE RECORD_METADATA:topic::VARCHAR = %(topic)s
)
SELECT KAFKA_PARTITION, KAFKA_OFFSET, COUNT(*) AS COPIES
FROM accounted
GROUP BY KAFKA_PARTITION, KAFKA_OFFSET
HAVING COUNT(*) > 1
ORDER BY KAFKA_PARTITION, KAFKA_OFFSET
LIMIT 100
