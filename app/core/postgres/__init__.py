"""Django's PostgreSQL backend, aware of database outages (see base.py)."""
