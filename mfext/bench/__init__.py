"""The benchmark behind ``python -m mfext bench``: the fused ops against autograd.

Modules, one job each: ``grid`` (cases, presets, inputs), ``backends`` (the
step under test), ``timing``, ``memory``, ``cost`` (flops and bytes),
``machine`` (machine facts, versions, ceilings), ``runner`` (the grid),
``report`` and ``plots`` (outputs), ``movielens`` (RMSE against time on a
real ratings file) and ``peers`` (other libraries on the same split).
The command itself (its arguments and the order of the run) lives in
:mod:`mfext.cli.bench`, the option checks in :mod:`mfext.cli.options`.
Nothing heavy is imported here.
"""
