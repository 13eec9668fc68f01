"""Reproduction experiments: arms x seeds of training runs, each evaluated, tabulated over seeds.

``config`` (what to run), ``runner`` (train and evaluate each unit, resumable), ``statistics``
(mean and 95 % interval over seeds), ``aggregate`` (tables and claims), ``report`` (results.md and
plots). The command ``comit experiment ...`` is ``comit.cli.experiment``.
"""
