with

tickets as (

    select * from {{ ref('stg_privacy__tickets') }}

),

solved as (

    select
        *,
        status in ('solved', 'closed') as is_solved

    from tickets

),

final as (

    select
        ticket_pk,
        contact_pk,
        channel,
        priority,
        status,
        satisfaction,
        created_on,
        strftime(created_on, '%Y-%m') as created_month,
        -- a reopened ticket keeps a stale solve time upstream: only solved
        -- and closed tickets carry one here
        case when is_solved then solved_on end as solved_on,
        is_solved,
        case when is_solved then resolution_hours end as resolution_hours,
        case
            when not is_solved or resolution_hours is null or resolution_hours < 0 then null
            when resolution_hours < 4 then '<4h'
            when resolution_hours < 24 then '4-24h'
            when resolution_hours < 72 then '1-3d'
            when resolution_hours < 168 then '3-7d'
            else '>7d'
        end as resolution_bucket

    from solved

)

select * from final
