"""Use cases the API (and later the CLI and file imports) call. No HTTP here: services take parsed
input and a database session, and raise the errors in services.errors."""
