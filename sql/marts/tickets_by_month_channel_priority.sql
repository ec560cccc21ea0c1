-- Ticket volume per calendar month, support channel and priority.
-- Every (month, channel, priority) cell of the public key lists is published,
-- empty ones included, so no cell is suppressed and none reveals rarity.
SELECT
    created_month,
    channel,
    priority,
    COUNT(*) AS tickets
FROM marts.tickets
GROUP BY created_month, channel, priority
