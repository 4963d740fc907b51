"""The navigation world: house generator, R2R-format data, metrics and the batched simulator."""
