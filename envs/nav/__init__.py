"""Vision-language navigation: R2R data, the procedural world, perception, the batched simulator, metrics.

Subpackages, in the order the data flows (imports only point up this list):

- ``data``: what a real R2R user brings (connectivity graphs, R2R JSON, HDF5/TSV features, tokenizer);
- ``world``: the embedded default benchmark (procedural houses, viewpoints, episodes, instructions);
- ``perception``: the ray caster, semantic descriptors, the view encoder, feature building, maps;
- ``sim``: :class:`~lodestar.envs.nav.sim.NavVecEnv`, which imports neither ``world`` nor ``perception``;
- ``eval``: the R2R metrics and the failure breakdown.
"""
