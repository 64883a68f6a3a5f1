"""Dataset versions and the pointer sets readers pin: pure rules (``pointers.py``) and their
Postgres store (``store.py``). See docs/datasets.md."""
