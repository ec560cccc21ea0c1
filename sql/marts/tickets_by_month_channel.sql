-- Monthly ticket volume per support channel.
-- Evaluated by SmartNoise SQL against marts.tickets (see tickets_by_month_channel.yml).
SELECT
    created_month,
    channel,
    COUNT(*) AS tickets
FROM marts.tickets
GROUP BY created_month, channel
ORDER BY created_month, channel
