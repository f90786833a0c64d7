"""The built-in evaluators, one module per family; :mod:`fleetbench._builtins.evaluators`
registers them. User documentation: docs/evaluators.md."""
