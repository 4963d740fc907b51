"""The embedded default benchmark: procedural houses, viewpoint graphs, R2R-rule episodes, instructions.

:func:`~lodestar.envs.nav.world.build.build_world` writes a dataset directory in the R2R layout
(see :mod:`lodestar.envs.nav.data`); real R2R users do not need this package.
"""
