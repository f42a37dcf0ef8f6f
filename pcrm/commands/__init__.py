"""The eight `pcrm` commands, one module each: its `Config` (options) and `run(config)`; the work is in the library."""
