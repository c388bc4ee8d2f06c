-- Landing zone of the Kafka sink. The two columns of POS_TRANSACTIONS are the
-- ones the Snowflake Kafka connector creates: RECORD_METADATA holds topic,
-- partition, offset, key and CreateTime, RECORD_CONTENT the event itself.
CREATE SCHEMA IF NOT EXISTS {{ params.tables.raw_schema }};

CREATE TABLE IF NOT EXISTS {{ params.tables.pos_transactions }} (
    RECORD_METADATA VARIANT,
    RECORD_CONTENT VARIANT
);

-- Events the sink could not use, with their bytes and the reason.
CREATE TABLE IF NOT EXISTS {{ params.tables.pos_quarantine }} (
    RECORD_METADATA VARIANT,
    RAW_BYTES BINARY,
    REASON VARCHAR,
    DETAIL VARCHAR,
    QUARANTINED_AT TIMESTAMP_NTZ
);

-- COPY INTO loads staged files here; the sink then moves rows to the tables
-- above with PARSE_JSON, skipping (partition, offset) pairs already present.
-- LANDING_KEY is topic, partition and first offset of the staged file the
-- row came from, written into each CSV row so that COPY fills it.
CREATE TABLE IF NOT EXISTS {{ params.tables.pos_landing }} (
    LANDING_KEY VARCHAR,
    RECORD_METADATA VARCHAR,
    RECORD_CONTENT VARCHAR
);

CREATE TABLE IF NOT EXISTS {{ params.tables.quarantine_landing }} (
    LANDING_KEY VARCHAR,
    RECORD_METADATA VARCHAR,
    RAW_BASE64 VARCHAR,
    REASON VARCHAR,
    DETAIL VARCHAR
);

-- One row per staged file: what COPY INTO reported for it.
CREATE TABLE IF NOT EXISTS {{ params.tables.sink_loads }} (
    FILE_NAME VARCHAR,
    TARGET_TABLE VARCHAR,
    KAFKA_PARTITION INTEGER,
    FIRST_OFFSET INTEGER,
    LAST_OFFSET INTEGER,
    STATUS VARCHAR,
    ROWS_PARSED INTEGER,
    ROWS_LOADED INTEGER,
    ROWS_INSERTED INTEGER,
    FIRST_ERROR VARCHAR,
    LOADED_AT TIMESTAMP_NTZ
);

-- The highest offset per partition the sink has landed or quarantined,
-- written in the same transaction as the rows, like the offset token the
-- Snowflake Kafka connector keeps in Snowflake.
CREATE TABLE IF NOT EXISTS {{ params.tables.sink_offsets }} (
    TOPIC VARCHAR,
    KAFKA_PARTITION INTEGER,
    LAST_OFFSET INTEGER,
    UPDATED_AT TIMESTAMP_NTZ
);

CREATE STAGE IF NOT EXISTS {{ params.tables.sink_stage }};
