-- Typed view of the landed events. InvoiceDate is the shop's UK wall-clock
-- time, kept as TIMESTAMP_NTZ; weeks are cut on it directly.
CREATE SCHEMA IF NOT EXISTS {{ params.tables.staging_schema }};

CREATE OR REPLACE VIEW {{ params.tables.pos_lines }} AS
SELECT
    RECORD_METADATA:topic::VARCHAR AS KAFKA_TOPIC,
    RECORD_METADATA:partition::INTEGER AS KAFKA_PARTITION,
    RECORD_METADATA:offset::INTEGER AS KAFKA_OFFSET,
    RECORD_CONTENT:InvoiceNo::VARCHAR AS INVOICE_NO,
    RECORD_CONTENT:StockCode::VARCHAR AS STOCK_CODE,
    RECORD_CONTENT:Description::VARCHAR AS DESCRIPTION,
    RECORD_CONTENT:Quantity::INTEGER AS QUANTITY,
    RECORD_CONTENT:InvoiceDate::TIMESTAMP_NTZ AS INVOICE_DATE,
    RECORD_CONTENT:UnitPrice::FLOAT AS UNIT_PRICE,
    RECORD_CONTENT:CustomerID::INTEGER AS CUSTOMER_ID,
    RECORD_CONTENT:Country::VARCHAR AS COUNTRY,
    LEFT(RECORD_CONTENT:InvoiceNo::VARCHAR, 1) = 'C' AS IS_CANCELLATION,
    RECORD_CONTENT:Quantity::INTEGER < 0 AS IS_RETURN
FROM {{ params.tables.pos_transactions }};

-- Bank holidays of England and Wales in 2010 to 2012: the years the sales
-- data covers and the year after it. Extend the list before running on later
-- data; weeks without an entry count as weeks without a bank holiday.
CREATE TABLE IF NOT EXISTS {{ params.tables.uk_bank_holidays }} (
    HOLIDAY_DATE DATE,
    NAME VARCHAR
);

DELETE FROM {{ params.tables.uk_bank_holidays }};

INSERT INTO {{ params.tables.uk_bank_holidays }} (HOLIDAY_DATE, NAME) VALUES
    ('2010-01-01', 'New Year''s Day'),
    ('2010-04-02', 'Good Friday'),
    ('2010-04-05', 'Easter Monday'),
    ('2010-05-03', 'Early May bank holiday'),
    ('2010-05-31', 'Spring bank holiday'),
    ('2010-08-30', 'Summer bank holiday'),
    ('2010-12-27', 'Christmas Day (substitute day)'),
    ('2010-12-28', 'Boxing Day (substitute day)'),
    ('2011-01-03', 'New Year''s Day (substitute day)'),
    ('2011-04-22', 'Good Friday'),
    ('2011-04-25', 'Easter Monday'),
    ('2011-04-29', 'Royal wedding'),
    ('2011-05-02', 'Early May bank holiday'),
    ('2011-05-30', 'Spring bank holiday'),
    ('2011-08-29', 'Summer bank holiday'),
    ('2011-12-26', 'Boxing Day'),
    ('2011-12-27', 'Christmas Day (substitute day)'),
    ('2012-01-02', 'New Year''s Day (substitute day)'),
    ('2012-04-06', 'Good Friday'),
    ('2012-04-09', 'Easter Monday'),
    ('2012-05-07', 'Early May bank holiday'),
    ('2012-06-04', 'Spring bank holiday (substitute day)'),
    ('2012-06-05', 'Queen''s Diamond Jubilee'),
    ('2012-08-27', 'Summer bank holiday'),
    ('2012-12-25', 'Christmas Day'),
    ('2012-12-26', 'Boxing Day');
