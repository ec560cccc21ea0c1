{#-
    Fails for every row of `model` where the boolean SQL `expression` is not
    true (false or null). Use it for row-level invariants between columns.
    Attached to a column, the column only documents where the test lives.
-#}
{% test expression_is_true(model, expression, column_name=none) %}

select 1 as offending_row
from {{ model }}
where not coalesce(({{ expression }}), false)

{% endtest %}
