-- The rows the suite validates: landed POS lines of one window, by event time.
SELECT
    KAFKA_TOPIC,
    KAFKA_PARTITION,
    KAFKA_OFFSET,
    INVOICE_NO,
    STOCK_CODE,
    DESCRIPTION,
    QUANTITY,
    INVOICE_DATE,
    UNIT_PRICE,
    CUSTOMER_ID,
    COUNTRY,
    IS_CANCELLATION,
    IS_RETURN
FROM {{ params.tables.pos_lines }}
WHERE INVOICE_DATE >= TO_TIMESTAMP_NTZ('{{ params.window.start }}')
  AND INVOICE_DATE < TO_TIMESTAMP_NTZ('{{ params.window.end }}')
