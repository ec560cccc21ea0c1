{#-
    Map an ISO 3166-1 alpha-2 country code to the sales region.
    Anything not listed (including null) becomes 'unknown'.
-#}
{% macro country_to_region(country_column) -%}
    case
        when {{ country_column }} in ('US', 'CA') then 'AMER'
        when {{ country_column }} in ('GB', 'DE', 'FR', 'NL', 'ES') then 'EMEA'
        when {{ country_column }} in ('AU') then 'APAC'
        else 'unknown'
    end
{%- endmacro %}
