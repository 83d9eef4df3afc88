"""The laboratory: `experiment` (ablations with repeats and confidence intervals), `synthetic` (the
SYNTHETIC world: simulated LLM, embedding renderer, hidden-preference scorer), `bench` (images/s
against the naive path) and `retouch_bench` (retouching on real photographs)."""
