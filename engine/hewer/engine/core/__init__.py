"""Pure engine logic: no I/O, no database, no network."""
