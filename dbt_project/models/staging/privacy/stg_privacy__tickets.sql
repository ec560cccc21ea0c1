with

source as (

    select * from {{ source('privacy', 'tickets') }}

),

renamed as (

    select

        ----------  ids
        cast(ticket_pk as varchar) as ticket_pk,
        cast(contact_pk as varchar) as contact_pk,

        ---------- strings
        -- subject and description are redacted free text: they stop here and
        -- never reach a mart.
        cast(subject as varchar) as subject,
        cast(description as varchar) as description,
        lower(trim(cast(channel as varchar))) as channel,
        lower(trim(cast(priority as varchar))) as priority,
        lower(trim(cast(status as varchar))) as status,
        lower(trim(cast(satisfaction as varchar))) as satisfaction,

        ---------- numerics
        cast(resolution_hours as double) as resolution_hours,

        ---------- dates
        cast(created_on as date) as created_on,
        cast(solved_on as date) as solved_on

    from source

)

select * from renamed
