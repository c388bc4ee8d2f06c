-- Ranges of offsets missing between the lowest and highest accounted offset
-- of each partition (gaps and islands over the distinct offsets).
WITH accounted AS (
    SELECT DISTINCT
        RECORD_METADATA:partition::INTEGER AS KAFKA_PARTITION,
        RECORD_METADATA:offset::INTEGER AS KAFKA_OFFSET
    FROM {{ params.tables.pos_transactions }}
    WHERE RECORD_METADATA:topic::VARCHAR = %(topic)s
    UNION
    SELECT DISTINCT
        RECORD_METADATA:partition::INTEGER,
        RECORD_METADATA:offset::INTEGER
    FROM {{ params.tables.pos_quarantine }}
    WHERE RECORD_METADATA:topic::VARCHAR = %(topic)s
),
ordered AS (
    SELECT
        KAFKA_PARTITION,
        KAFKA_OFFSET,
        LAG(KAFKA_OFFSET) OVER (PARTITION BY KAFKA_PARTITION ORDER BY KAFKA_OFFSET) AS PREVIOUS_OFFSET
    FROM accounted
)
SELECT
    KAFKA_PARTITION,
    PREVIOUS_OFFSET + 1 AS GAP_START,
    KAFKA_OFFSET - 1 AS GAP_END
FROM ordered
WHERE KAFKA_OFFSET - PREVIOUS_OFFSET > 1
ORDER BY KAFKA_PARTITION, GAP_START
