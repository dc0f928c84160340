"""Synthetic glioblastoma cohorts on real anatomy (MNI152 2009a from nilearn).

anatomy -> tumour -> mri (sequences from tissue properties) -> scanner (acquisition) ->
cohort (presets, Table 2 missing patterns, writing BraTS-style folders).
"""

from core.synth.cohort import PRESETS, CasePlan, SyntheticCase, make_case, plan_cohort, write_cohort

__all__ = ["PRESETS", "CasePlan", "SyntheticCase", "make_case", "plan_cohort", "write_cohort"]
