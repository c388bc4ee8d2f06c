-- Features of one week (WEEK_START) for the top N products, built only from
-- sales before that week and from the calendar. QUANTITY, the units sold in
-- the week itself, is the training target; it is NULL when the week has not
-- happened yet (%(target_known)s is false), for the row the model forecasts.
INSERT INTO {{ params.tables.weekly_demand }} (
    STOCK_CODE, WEEK_START, QUANTITY,
    LAG_1, LAG_2, LAG_3, LAG_4,
    ROLLING_MEAN_4, ROLLING_STD_4, ROLLING_MEAN_13, ROLLING_STD_13,
    LAG_1_RATIO, LAG_2_RATIO, LAG_3_RATIO, LAG_4_RATIO, MEAN_13_RATIO, STD_4_RATIO,
    SHOP_TREND_1_4, SHOP_TREND_4_13,
    WEEKS_SINCE_LAST_SALE, AVG_UNIT_PRICE, PRICE_CHANGE,
    DISTINCT_CUSTOMERS_4, RETURNS_RATE_13,
    BANK_HOLIDAYS, WEEK_OF_YEAR, MONTH, WEEKS_TO_CHRISTMAS,
    SKU_RANK
)
WITH lines AS (
    SELECT
        STOCK_CODE,
        DATE_TRUNC('WEEK', INVOICE_DATE)::DATE AS LINE_WEEK,
        QUANTITY,
        UNIT_PRICE,
        CUSTOMER_ID
    FROM {{ params.tables.pos_lines }}
    WHERE INVOICE_DATE >= DATEADD(WEEK, -52, %(week_start)s::DATE)::TIMESTAMP_NTZ
      AND INVOICE_DATE < DATEADD(WEEK, 1, %(week_start)s::DATE)::TIMESTAMP_NTZ
      AND REGEXP_LIKE(STOCK_CODE, '{{ params.features.product_code_pattern }}')
),
weekly AS (
    SELECT
        STOCK_CODE,
        LINE_WEEK,
        -- Demand is net of the week's cancellations and returns: an order
        -- cancelled the same week did not consume stock.
        GREATEST(SUM(QUANTITY), 0) AS SOLD,
        SUM(IFF(QUANTITY > 0, QUANTITY, 0)) AS GROSS_SOLD,
        SUM(IFF(QUANTITY < 0, -QUANTITY, 0)) AS RETURNED,
        SUM(IFF(QUANTITY > 0, QUANTITY * UNIT_PRICE, 0)) AS REVENUE
    FROM lines
    GROUP BY STOCK_CODE, LINE_WEEK
),
ranked AS (
    -- Top N by units sold in the 52 weeks before the week.
    SELECT
        STOCK_CODE,
        ROW_NUMBER() OVER (ORDER BY SUM(SOLD) DESC, STOCK_CODE) AS SKU_RANK
    FROM weekly
    WHERE LINE_WEEK < %(week_start)s::DATE
    GROUP BY STOCK_CODE
    QUALIFY ROW_NUMBER() OVER (ORDER BY SUM(SOLD) DESC, STOCK_CODE) <= %(top_n)s
),
history AS (
    -- Weeks without a sale have no row in `weekly`, so sums run over the
    -- weeks that had sales and means divide by the full number of weeks.
    SELECT
        r.STOCK_CODE,
        r.SKU_RANK,
        SUM(IFF(w.LINE_WEEK = DATEADD(WEEK, -1, %(week_start)s::DATE), w.SOLD, 0)) AS LAG_1,
        SUM(IFF(w.LINE_WEEK = DATEADD(WEEK, -2, %(week_start)s::DATE), w.SOLD, 0)) AS LAG_2,
        SUM(IFF(w.LINE_WEEK = DATEADD(WEEK, -3, %(week_start)s::DATE), w.SOLD, 0)) AS LAG_3,
        SUM(IFF(w.LINE_WEEK = DATEADD(WEEK, -4, %(week_start)s::DATE), w.SOLD, 0)) AS LAG_4,
        SUM(IFF(w.LINE_WEEK >= DATEADD(WEEK, -4, %(week_start)s::DATE), w.SOLD, 0)) AS SOLD_4,
        SUM(IFF(w.LINE_WEEK >= DATEADD(WEEK, -4, %(week_start)s::DATE), w.SOLD * w.SOLD, 0)) AS SQUARES_4,
        SUM(IFF(w.LINE_WEEK >= DATEADD(WEEK, -13, %(week_start)s::DATE), w.SOLD, 0)) AS SOLD_13,
        SUM(IFF(w.LINE_WEEK >= DATEADD(WEEK, -13, %(week_start)s::DATE), w.SOLD * w.SOLD, 0)) AS SQUARES_13,
        SUM(IFF(w.LINE_WEEK >= DATEADD(WEEK, -13, %(week_start)s::DATE), w.RETURNED, 0)) AS RETURNED_13,
        SUM(IFF(w.LINE_WEEK >= DATEADD(WEEK, -13, %(week_start)s::DATE), w.GROSS_SOLD, 0)) AS GROSS_SOLD_13,
        SUM(IFF(w.LINE_WEEK >= DATEADD(WEEK, -4, %(week_start)s::DATE), w.GROSS_SOLD, 0)) AS GROSS_SOLD_4,
        SUM(IFF(w.LINE_WEEK >= DATEADD(WEEK, -4, %(week_start)s::DATE), w.REVENUE, 0)) AS REVENUE_4,
        SUM(IFF(
            w.LINE_WEEK < DATEADD(WEEK, -4, %(week_start)s::DATE)
            AND w.LINE_WEEK >= DATEADD(WEEK, -13, %(week_start)s::DATE), w.REVENUE, 0
        )) AS REVENUE_5_13,
        SUM(IFF(
            w.LINE_WEEK < DATEADD(WEEK, -4, %(week_start)s::DATE)
            AND w.LINE_WEEK >= DATEADD(WEEK, -13, %(week_start)s::DATE), w.GROSS_SOLD, 0
        )) AS GROSS_SOLD_5_13,
        MAX(IFF(w.SOLD > 0, w.LINE_WEEK, NULL)) AS LAST_SALE_WEEK
    FROM ranked AS r
    LEFT JOIN weekly AS w
        ON w.STOCK_CODE = r.STOCK_CODE
        AND w.LINE_WEEK < %(week_start)s::DATE
    GROUP BY r.STOCK_CODE, r.SKU_RANK
),
customers AS (
    SELECT STOCK_CODE, COUNT(DISTINCT CUSTOMER_ID) AS DISTINCT_CUSTOMERS_4
    FROM lines
    WHERE LINE_WEEK >= DATEADD(WEEK, -4, %(week_start)s::DATE)
      AND LINE_WEEK < %(week_start)s::DATE
      AND QUANTITY > 0
    GROUP BY STOCK_CODE
),
target AS (
    SELECT STOCK_CODE, SOLD
    FROM weekly
    WHERE LINE_WEEK = %(week_start)s::DATE
),
shop AS (
    -- Demand of all products together: how the whole shop is trending.
    SELECT
        SUM(IFF(LINE_WEEK = DATEADD(WEEK, -1, %(week_start)s::DATE), SOLD, 0)) AS SHOP_LAG_1,
        SUM(IFF(LINE_WEEK >= DATEADD(WEEK, -4, %(week_start)s::DATE), SOLD, 0)) / 4.0 AS SHOP_MEAN_4,
        SUM(IFF(LINE_WEEK >= DATEADD(WEEK, -13, %(week_start)s::DATE), SOLD, 0)) / 13.0 AS SHOP_MEAN_13
    FROM weekly
    WHERE LINE_WEEK < %(week_start)s::DATE
),
calendar AS (
    SELECT COUNT(*) AS BANK_HOLIDAYS
    FROM {{ params.tables.uk_bank_holidays }}
    WHERE HOLIDAY_DATE >= %(week_start)s::DATE
      AND HOLIDAY_DATE < DATEADD(WEEK, 1, %(week_start)s::DATE)
)
SELECT
    h.STOCK_CODE,
    %(week_start)s::DATE AS WEEK_START,
    IFF(%(target_known)s, COALESCE(t.SOLD, 0), NULL) AS QUANTITY,
    h.LAG_1,
    h.LAG_2,
    h.LAG_3,
    h.LAG_4,
    h.SOLD_4 / 4.0 AS ROLLING_MEAN_4,
    SQRT(GREATEST(h.SQUARES_4 / 4.0 - (h.SOLD_4 / 4.0) * (h.SOLD_4 / 4.0), 0)) AS ROLLING_STD_4,
    h.SOLD_13 / 13.0 AS ROLLING_MEAN_13,
    SQRT(GREATEST(h.SQUARES_13 / 13.0 - (h.SOLD_13 / 13.0) * (h.SOLD_13 / 13.0), 0)) AS ROLLING_STD_13,
    -- Scale-free views of the history relative to the 4-week mean, so one
    -- model serves products that sell 10 or 10,000 units a week.
    h.LAG_1 / (h.SOLD_4 / 4.0 + 1) AS LAG_1_RATIO,
    h.LAG_2 / (h.SOLD_4 / 4.0 + 1) AS LAG_2_RATIO,
    h.LAG_3 / (h.SOLD_4 / 4.0 + 1) AS LAG_3_RATIO,
    h.LAG_4 / (h.SOLD_4 / 4.0 + 1) AS LAG_4_RATIO,
    (h.SOLD_13 / 13.0) / (h.SOLD_4 / 4.0 + 1) AS MEAN_13_RATIO,
    SQRT(GREATEST(h.SQUARES_4 / 4.0 - (h.SOLD_4 / 4.0) * (h.SOLD_4 / 4.0), 0)) / (h.SOLD_4 / 4.0 + 1) AS STD_4_RATIO,
    IFF(s.SHOP_MEAN_4 > 0, s.SHOP_LAG_1 / s.SHOP_MEAN_4, NULL) AS SHOP_TREND_1_4,
    IFF(s.SHOP_MEAN_13 > 0, s.SHOP_MEAN_4 / s.SHOP_MEAN_13, NULL) AS SHOP_TREND_4_13,
    COALESCE(DATEDIFF(WEEK, h.LAST_SALE_WEEK, %(week_start)s::DATE), 53) AS WEEKS_SINCE_LAST_SALE,
    IFF(h.GROSS_SOLD_4 > 0, h.REVENUE_4 / h.GROSS_SOLD_4, NULL) AS AVG_UNIT_PRICE,
    IFF(h.GROSS_SOLD_4 > 0 AND h.GROSS_SOLD_5_13 > 0 AND h.REVENUE_5_13 > 0,
        (h.REVENUE_4 / h.GROSS_SOLD_4) / (h.REVENUE_5_13 / h.GROSS_SOLD_5_13) - 1, NULL) AS PRICE_CHANGE,
    COALESCE(c.DISTINCT_CUSTOMERS_4, 0) AS DISTINCT_CUSTOMERS_4,
    IFF(h.GROSS_SOLD_13 > 0, h.RETURNED_13 / h.GROSS_SOLD_13, 0) AS RETURNS_RATE_13,
    cal.BANK_HOLIDAYS,
    WEEKISO(%(week_start)s::DATE) AS WEEK_OF_YEAR,
    MONTH(%(week_start)s::DATE) AS MONTH,
    -- Weeks until the next 25 December; the retailer's peak runs up to it.
    FLOOR(DATEDIFF(DAY, %(week_start)s::DATE, IFF(
        %(week_start)s::DATE <= DATE_FROM_PARTS(YEAR(%(week_start)s::DATE), 12, 25),
        DATE_FROM_PARTS(YEAR(%(week_start)s::DATE), 12, 25),
        DATE_FROM_PARTS(YEAR(%(week_start)s::DATE) + 1, 12, 25)
    )) / 7) AS WEEKS_TO_CHRISTMAS,
    h.SKU_RANK
FROM history AS h
LEFT JOIN target AS t ON t.STOCK_CODE = h.STOCK_CODE
LEFT JOIN customers AS c ON c.STOCK_CODE = h.STOCK_CODE
CROSS JOIN shop AS s
CROSS JOIN calendar AS cal
-- A forecast row is not written over a week that already has its target.
WHERE %(target_known)s OR NOT EXISTS (
    SELECT 1
    FROM {{ params.tables.weekly_demand }} AS built
    WHERE built.WEEK_START = %(week_start)s::DATE
      AND built.QUANTITY IS NOT NULL
)
