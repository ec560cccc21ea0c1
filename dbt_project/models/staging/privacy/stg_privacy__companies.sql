with

source as (

    select * from {{ source('privacy', 'companies') }}

),

renamed as (

    select

        ----------  ids
        cast(company_pk as varchar) as company_pk,

        ---------- strings
        cast(industry as varchar) as industry,
        cast(employee_band as varchar) as employee_band,
        upper(trim(cast(country as varchar))) as country,

        ---------- dates
        cast(created_on as date) as created_on

    from source

)

select * from renamed
