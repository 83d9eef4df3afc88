"""LLMs: the backends behind one batched `complete` call (OpenAI-compatible servers, a local
transformers model, scripted stand-ins), `calls.ask` (every call logged with its template's hash),
the meta-prompt `templates` and the tolerant `parsing` of replies. A new backend registers with
`registry.register_llm`."""
