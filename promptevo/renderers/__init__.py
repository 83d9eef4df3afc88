"""Renderers: text and seed in, images out, in batches. `diffusers` draws with any diffusers
text-to-image pipeline (hub id or local folder); `tiny` builds the toy Stable Diffusion the tiny
profile uses; `faithful` builds full-size random-weight architectures for GPU benchmarks. A new
renderer registers with `registry.register_renderer`."""
