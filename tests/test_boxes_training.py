"""The box rule on the training path: a broken person box stops the data module before any batch, naming the file
and the frame key (it used to stop `fit` at the first batch with "Expected finite matching costs", blaming the
model)."""

from __future__ import annotations

import numpy as np
import pytest

from ag_fixtures import person_entry, standard_entries, write_root
from arn_lightning.data.ag import AnnotationError
from arn_lightning.data.datamodule import AGDataModule

KEY = "A0001.mp4/000004.png"  # a kept train frame of the standard root


@pytest.mark.parametrize(
    "box, reason",
    [
        ((10.0, np.nan, 40.0, 45.0), "a non-finite coordinate"),
        ((10.0, 5.0, -np.inf, 45.0), "a non-finite coordinate"),
        ((10.0, 45.0, 40.0, 5.0), "y2 < y1"),
    ],
)
def test_broken_person_box_is_reported_by_the_data_module_before_training(tmp_path, box, reason):
    person, objects = standard_entries()
    person[KEY] = person_entry(box)
    root = write_root(tmp_path / "ag", person, objects, frames=True)
    module = AGDataModule(str(root), resize_shorter=24, resize_longer=100, batch_size=2, eval_batch_size=2)
    with pytest.raises(AnnotationError, match=rf"person_bbox.pkl\['{KEY}'\]\['bbox'\]: Expected .*\({reason}\)"):
        _ = module.triplet_categories  # what the CLI reads when it builds the model, before fit starts
