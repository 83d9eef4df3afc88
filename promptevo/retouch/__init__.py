"""Retouching: `ops` (the operations, registered as post-render operations), `plan` (validated,
hashed plans) and `planner` (the LLM or rules plan, optuna refines the values, an identity guard)."""
