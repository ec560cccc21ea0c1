{#-
    Fails for every non-null value of `column_name` that does not fully match
    the regular expression `pattern` (RE2 syntax, as in DuckDB's
    regexp_full_match). The failing rows carry no values: a key that is not a
    pseudonym may be a leaked identifier, and it must not end up in logs or
    stored test failures.
-#}
{% test matches_pattern(model, column_name, pattern) %}

select 1 as offending_row
from {{ model }}
where {{ column_name }} is not null
    and not regexp_full_match({{ column_name }}, '{{ pattern }}')

{% endtest %}
