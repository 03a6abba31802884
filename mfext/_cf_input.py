# TEMP SHIM: remove when tests import the new path
"""Old home of the recommender input forms, now :mod:`mfext.recommenders.inputs`."""
from .recommenders.inputs import (  # noqa: F401
    FORMS, PAIRS_FORM, Triple, as_ids, canonical_order, csr_by, pair_columns, pairs_to_triple,
    to_triple)
