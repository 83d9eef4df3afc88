"""Rewards: images (and their target prompts) in, one value each. One module per reward, each with
its real loader (hub id or local path), its toy stand-in for the tiny profile, and the facts
objectives weigh it by, given to `registry.register_reward`. `objective` turns the scores into a
trial's value and a paired gain over the naive prompt."""
