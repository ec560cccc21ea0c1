with

contacts as (

    select * from {{ ref('int_contacts_joined_to_companies') }}

),

tickets as (

    select * from {{ ref('int_tickets_aggregated_to_contacts') }}

),

deals as (

    select * from {{ ref('int_deals_aggregated_to_contacts') }}

),

final as (

    select
        contacts.contact_pk,
        contacts.company_pk,
        contacts.age_band,
        contacts.country,
        contacts.region,
        contacts.lifecycle_stage,
        contacts.created_on,
        coalesce(tickets.ticket_count, 0) as ticket_count,
        coalesce(deals.deal_count, 0) as deal_count,
        cast(coalesce(deals.won_amount, 0) as decimal(18, 2)) as won_amount

    from contacts
    left join tickets
        on contacts.contact_pk = tickets.contact_pk
    left join deals
        on contacts.contact_pk = deals.contact_pk

)

select * from final
