"""Everything that touches BasicSR: DUPruModel (`model`), the option checks (`options`, `pruning_options`,
`datasets`), the rule registries, target presets, compatibility shims, resume, and the training loop's additions.

Importing this package imports nothing; `import dupru_basicsr` applies the shims and registers the model.
"""
