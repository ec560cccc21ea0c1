with

source as (

    select * from {{ source('privacy', 'deals') }}

),

renamed as (

    select

        ----------  ids
        cast(deal_pk as varchar) as deal_pk,
        cast(contact_pk as varchar) as contact_pk,
        cast(company_pk as varchar) as company_pk,

        ---------- strings
        lower(trim(cast(stage as varchar))) as stage,
        cast(pipeline as varchar) as pipeline,
        upper(trim(cast(currency as varchar))) as currency,

        ---------- numerics
        cast(amount as decimal(18, 2)) as amount,

        ---------- dates
        cast(created_on as date) as created_on,
        cast(close_date as date) as close_date

    from source

)

select * from renamed
