-- Pipeline value and deal volume per deal stage.
SELECT
    stage,
    SUM(amount) AS total_amount,
    COUNT(*) AS deals
FROM marts.deal_pipeline
GROUP BY stage
ORDER BY stage
