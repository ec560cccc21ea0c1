with

tickets as (

    select * from {{ ref('stg_privacy__tickets') }}

),

aggregated as (

    select
        contact_pk,
        count(*) as ticket_count

    from tickets
    group by contact_pk

)

select * from aggregated
