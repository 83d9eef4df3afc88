"""Prompt collections: `collection` (import with provenance, duplicates, search, tags, splits,
scoring), `prompt_io` (reading prompt files people hand in) and `references` (a collection's
nearest prompts for the critic)."""
