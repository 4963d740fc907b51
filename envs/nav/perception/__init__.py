"""What the agent sees: the batched ray caster, semantic descriptors, the view encoder, the feature
store, and top-down maps and first-person GIFs for watching episodes."""
