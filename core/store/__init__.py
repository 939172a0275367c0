"""The store: crash-safe files (``files``) and the run store, SQLite plus one folder per run (``runs``).

The foundation every other part writes through. May import ``core.config`` and ``core.errors`` only.
"""
