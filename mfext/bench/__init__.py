"""The command line's benchmark and helper commands (``python -m mfext ...``).

Modules, one job each: ``grid`` (cases, presets, inputs), ``backends`` (the
step under test), ``timing``, ``memory``, ``cost`` (flops and bytes),
``machine`` (machine facts, versions, ceilings), ``runner`` (the grid),
``report`` and ``plots`` (outputs), ``cli`` (``bench``), ``demo``,
``movielens``, ``peers``, ``cf`` (``fit`` / ``recommend``) and ``options`` (the checks
of command-line options, run before any work).
Nothing heavy is imported here.
"""
