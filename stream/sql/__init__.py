"""The database: tables, the engine and the migrations (``db.py``, ``migrations/``) and what users ask of them
(``queries.py``). Imports nothing else of ``stream``."""
