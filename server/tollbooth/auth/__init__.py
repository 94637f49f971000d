"""Who is calling: service keys and bearer tokens."""
