"""Label schemes: detection from values, explicit maps, and the anatomy check."""

import numpy as np
import pytest

from core.labels import LabelError, detect_label_scheme, infer_label_roles, parse_label_scheme, to_canonical
from tests.conftest import phantom


@pytest.mark.parametrize(("values", "scheme"), [({0, 1, 2, 4}, "brats2020"), ({0, 4}, "brats2020"),
                                                 ({0, 1, 2, 3}, "brats2023"), ({0, 1, 2}, "brats2020"),
                                                 ({0, 1}, "tc"), ({0}, "brats2023")])  # fmt: skip
def test_detection_from_values(values, scheme):
    # {1, 2} fits both BraTS schemes, which map 1 and 2 the same way.
    assert detect_label_scheme(values) == scheme


def test_explicit_maps_and_errors():
    assert parse_label_scheme("1=enhancing, 2=necrosis, 3=oedema") == {0: 0, 1: 3, 2: 1, 3: 2}
    with pytest.raises(LabelError, match="neither one of"):
        parse_label_scheme("1=tumour")
    with pytest.raises(LabelError, match=r"\[1, 5\] fit no known scheme"):
        detect_label_scheme({0, 1, 5})
    with pytest.raises(LabelError, match="non-integer values such as \\[0.5\\]"):
        to_canonical(np.array([[[0.0, 0.5]]]), None, None)


def test_anatomy_check_needs_a_clear_glioblastoma_layout():
    images, labels = phantom()
    # Canonical layout stored as BraTS 2023 values: consistent, nothing to change.
    assert infer_label_roles(labels, images[1]) == {0: 0, 1: 1, 2: 2, 3: 3}
    # Two tumour labels only: no opinion.
    assert infer_label_roles(np.where(labels == 2, 0, labels), images[1]) is None
    # T1c that contradicts the topology (necrosis brightest): no opinion either.
    contrary = np.where(labels == 1, 500.0, images[1])
    assert infer_label_roles(labels, contrary) is None
    canonical, name, warnings = to_canonical(labels, None, images[1])
    assert name == "brats2023" and warnings == [] and np.array_equal(canonical, labels)
