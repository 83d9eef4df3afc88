"""The storage wing, the only code that writes SQL: `store` (one SQLite file in WAL mode, its
migrations, content-hashed image files beside it), `repository` (every read and write of runs,
rounds, instructions, rewrites, trials, events; `judgements` mixed in), `prompt_tables` (the
prompt collection's tables) and `lease` (which process owns a run)."""
