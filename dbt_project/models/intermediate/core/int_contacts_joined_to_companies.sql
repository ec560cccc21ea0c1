with

contacts as (

    select * from {{ ref('stg_privacy__contacts') }}

),

companies as (

    select * from {{ ref('stg_privacy__companies') }}

),

joined as (

    select
        contacts.contact_pk,
        contacts.company_pk,
        contacts.age_band,
        contacts.country,
        companies.country as company_country,
        {{ country_to_region('coalesce(contacts.country, companies.country)') }} as region,
        contacts.lifecycle_stage,
        contacts.created_on

    from contacts
    left join companies
        on contacts.company_pk = companies.company_pk

)

select * from joined
