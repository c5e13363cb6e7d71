"""The random-weight kit through the real loader: sd.cpp recognises each dense variant."""

from __future__ import annotations

import logging

import pytest

import wanpy
from wanpy.testing import cached_model_set

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("variant", "detected"), [
    ("wan2.1-t2v-1.3b", "Wan2.1-T2V-1.3B"),
    ("wan2.2-ti2v-5b", "Wan2.2-TI2V-5B"),
])
def test_sdcpp_loads_the_kit_and_names_the_model(variant, detected, caplog):
    models = cached_model_set(variant=variant, dtype="q4_0", seed=0)
    with caplog.at_level(logging.INFO, logger="wanpy"):
        with wanpy.WanPipeline(**models.pipeline_kwargs(), n_threads=2) as pipe:
            assert pipe.family.name == variant
    messages = [r.getMessage() for r in caplog.records]
    assert detected in messages
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "sd.cpp logged errors while loading"
