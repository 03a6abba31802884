"""mfext's command line: ``python -m mfext COMMAND`` (or the ``mfext`` console script).

Modules, one job each: ``main`` (the parser, the dispatch, and the one-line
error policy with its exit codes), one module per command, each holding its
arguments and its work: ``demo``, ``bench``, ``fit`` and ``recommend``; and
``options`` (the checks of command-line options, run before any work).

The commands are thin: they check the options, then call the public API
(``mfext.factorize``, ``mfext.MatrixFactorization``, ``mfext.datasets``) or
the benchmark (:mod:`mfext.bench`, which owns the grid, the timing and the
reports). Nothing below the command line imports this package. Nothing heavy
is imported here.
"""
