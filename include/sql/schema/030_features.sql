CREATE SCHEMA IF NOT EXISTS {{ params.tables.features_schema }};

-- One row per stock code and week. Every feature of week WEEK_START is
-- computed from sales before that week, or from the calendar; QUANTITY is the
-- units sold in the week itself and is the training target. Rows with a NULL
-- QUANTITY are the inputs of the next forecast: their week has not ended.
CREATE TABLE IF NOT EXISTS {{ params.tables.weekly_demand }} (
    STOCK_CODE VARCHAR,
    WEEK_START DATE,
    QUANTITY FLOAT,
    LAG_1 FLOAT,
    LAG_2 FLOAT,
    LAG_3 FLOAT,
    LAG_4 FLOAT,
    ROLLING_MEAN_4 FLOAT,
    ROLLING_STD_4 FLOAT,
    ROLLING_MEAN_13 FLOAT,
    ROLLING_STD_13 FLOAT,
    LAG_1_RATIO FLOAT,
    LAG_2_RATIO FLOAT,
    LAG_3_RATIO FLOAT,
    LAG_4_RATIO FLOAT,
    MEAN_13_RATIO FLOAT,
    STD_4_RATIO FLOAT,
    SHOP_TREND_1_4 FLOAT,
    SHOP_TREND_4_13 FLOAT,
    WEEKS_SINCE_LAST_SALE FLOAT,
    AVG_UNIT_PRICE FLOAT,
    PRICE_CHANGE FLOAT,
    DISTINCT_CUSTOMERS_4 FLOAT,
    RETURNS_RATE_13 FLOAT,
    BANK_HOLIDAYS INTEGER,
    WEEK_OF_YEAR INTEGER,
    MONTH INTEGER,
    WEEKS_TO_CHRISTMAS INTEGER,
    SKU_RANK INTEGER
);
