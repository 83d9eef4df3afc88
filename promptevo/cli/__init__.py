"""The command line: `main` (the app and small commands), one module per command group
(`optimize`, `runs`, `db`, `retouch`, `serve`) and `common` (shared options, output, errors)."""
