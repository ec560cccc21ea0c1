-- Time to resolution (hours) and solved-ticket volume per priority.
-- COUNT(resolution_hours) reuses the noisy count behind the average, so the
-- SQL statistics are two (sum and count). Quantiles come from the spec.
SELECT
    priority,
    AVG(resolution_hours) AS avg_resolution_hours,
    COUNT(resolution_hours) AS solved_tickets
FROM marts.tickets
WHERE is_solved
GROUP BY priority
