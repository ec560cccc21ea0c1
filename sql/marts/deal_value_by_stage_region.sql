-- Pipeline value and deal volume per deal stage and sales region.
SELECT
    stage,
    region,
    SUM(amount) AS total_amount,
    COUNT(*) AS deals
FROM marts.deal_pipeline
GROUP BY stage, region
