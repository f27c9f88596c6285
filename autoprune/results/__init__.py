"""Run folders: a search run into one (``run_search``, sweeps), read back (``load_run``), reported, picked from
and exported."""
