with

deals as (

    select * from {{ ref('int_deals_joined_to_accounts') }}

),

aggregated as (

    select
        contact_pk,
        count(*) as deal_count,
        count(*) filter (where is_won) as won_deal_count,
        coalesce(sum(amount) filter (where is_won), 0) as won_amount

    from deals
    where contact_pk is not null
    group by contact_pk

)

select * from aggregated
