"""The evaluation boundary: jobs (text, seed, target prompt, variant) in, images and scores out.
`evaluator` (the local evaluator and the cache over the store), `model_pool` (renderers loaded
lazily and shared), `ray_workers` (the same evaluator on Ray actors), `components` (a profile's
models, built once)."""
