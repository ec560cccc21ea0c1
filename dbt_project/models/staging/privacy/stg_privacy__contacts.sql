with

source as (

    select * from {{ source('privacy', 'contacts') }}

),

renamed as (

    select

        ----------  ids
        cast(contact_pk as varchar) as contact_pk,
        cast(company_pk as varchar) as company_pk,
        cast(email_pk as varchar) as email_pk,
        cast(phone_pk as varchar) as phone_pk,

        ---------- strings
        cast(age_band as varchar) as age_band,
        cast(postal_prefix as varchar) as postal_prefix,
        upper(trim(cast(country as varchar))) as country,
        lower(trim(cast(lifecycle_stage as varchar))) as lifecycle_stage,

        ---------- dates
        cast(created_on as date) as created_on

    from source

)

select * from renamed
