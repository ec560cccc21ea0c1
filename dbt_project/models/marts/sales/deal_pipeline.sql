with

deals as (

    select * from {{ ref('int_deals_joined_to_accounts') }}

),

final as (

    select
        deal_pk,
        contact_pk,
        company_pk,
        stage,
        pipeline,
        region,
        amount,
        currency,
        created_on,
        close_date,
        is_closed,
        is_won

    from deals

)

select * from final
