"""The model store and its rules: the SQL (``model_store``), the checks into and out of it (``model_gate``), the
operator's commands (``model_lifecycle``) and a running worker following the live and shadow versions
(``model_swap``)."""
