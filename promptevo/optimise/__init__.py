"""The optimiser: `optimizer` (the stages: search rounds, selection pass, held-out evaluation),
`strategies` (how a round draws prompts and arms and makes new instructions; registered with
`registry.register_strategy`), `plans` (typed round plans), `run_config` (a run's settings),
`bandit` (arm statistics and selectors), `critic` and `generator` (the LLM roles), `hints`,
`agent` (the objective agent), `variants`, `variant_search` and `routing` (render variants),
`summary` and `progress`."""
