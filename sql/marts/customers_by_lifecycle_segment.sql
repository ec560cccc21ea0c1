-- Customers per lifecycle stage and segment (sales region x age band).
SELECT
    lifecycle_stage,
    region,
    age_band,
    COUNT(*) AS customers
FROM marts.customers
GROUP BY lifecycle_stage, region, age_band
