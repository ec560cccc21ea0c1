with

deals as (

    select * from {{ ref('stg_privacy__deals') }}

),

companies as (

    select * from {{ ref('stg_privacy__companies') }}

),

contacts as (

    select * from {{ ref('stg_privacy__contacts') }}

),

joined as (

    select
        deals.deal_pk,
        deals.contact_pk,
        deals.company_pk,
        deals.stage,
        deals.pipeline,
        -- the deal's company decides the region; deals without a company (or
        -- whose company has no country) fall back to the contact's country
        {{ country_to_region('coalesce(companies.country, contacts.country)') }} as region,
        deals.amount,
        deals.currency,
        deals.created_on,
        deals.close_date,
        deals.stage in ('closedwon', 'closedlost') as is_closed,
        deals.stage = 'closedwon' as is_won

    from deals
    left join companies
        on deals.company_pk = companies.company_pk
    left join contacts
        on deals.contact_pk = contacts.contact_pk

)

select * from joined
