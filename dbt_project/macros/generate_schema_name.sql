{#-
    Use a model's custom schema as-is (`marts`, not `main_marts`), so the
    publish step and analysts can rely on stable schema names. Models without
    a custom schema land in the target schema.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
