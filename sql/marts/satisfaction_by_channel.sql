-- Distribution of satisfaction ratings per support channel.
SELECT
    channel,
    satisfaction,
    COUNT(*) AS tickets
FROM marts.tickets
GROUP BY channel, satisfaction
