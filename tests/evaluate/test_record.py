"""The registry tags of evaluations and promotions, the comparison that decides a
promotion, and the options' checks: pure, worked out by hand."""

from __future__ import annotations

import pytest

from pipelines.errors import OptionError
from pipelines.evaluate import PromoteConfig
from pipelines.evaluate.record import (
    Comparison,
    eval_tags,
    evaluated_datasets,
    promote_key,
    recorded,
    recorded_field,
)


def test_a_shortfall_is_measured_in_the_metrics_units() -> None:
    short = Comparison("micro_auc", candidate=0.9012, incumbent=0.9150)
    assert not short.promotes and short.relation == "<"
    assert short.margin == pytest.approx(-0.0138)
    ahead = Comparison("macro_auc", candidate=0.93, incumbent=0.90)
    assert ahead.promotes and ahead.relation == ">=" and ahead.margin == pytest.approx(0.03)


def test_a_tie_promotes_and_a_lower_eer_is_better() -> None:
    assert Comparison("micro_auc", 0.9, 0.9).promotes
    lower = Comparison("eer", candidate=0.10, incumbent=0.15)
    assert lower.promotes and lower.relation == "<=" and lower.margin == pytest.approx(0.05)
    higher = Comparison("eer", candidate=0.20, incumbent=0.15)
    assert not higher.promotes and higher.relation == ">"
    assert higher.margin == pytest.approx(-0.05)


def test_an_evaluation_round_trips_through_the_tags() -> None:
    metrics = {"micro_auc": 0.9123456789, "eer": 0.125, "per_video_micro_auc": 0.9, "events": 3}
    tags = eval_tags("ped2", "test", metrics, "run1", "per-video", "/data/ped2")
    assert tags == {
        "mnad.eval.ped2.test.micro_auc": "0.9123456789",
        "mnad.eval.ped2.test.eer": "0.125",
        "mnad.eval.ped2.test.per_video_micro_auc": "0.9",
        "mnad.eval.ped2.test.run_id": "run1",
        "mnad.eval.ped2.test.normalise": "per-video",
        "mnad.eval.ped2.test.data": "/data/ped2",
    }  # events is no evaluation metric; macro_auc was not there
    back = recorded({**tags, "mnad.calibration": "{}"}, "ped2", "test")
    assert back == {"micro_auc": 0.9123456789, "eer": 0.125, "per_video_micro_auc": 0.9}
    assert recorded(tags, "ped2", "train") is None and recorded(tags, "avenue", "test") is None
    assert recorded_field(tags, "ped2", "test", "normalise") == "per-video"


def test_names_become_one_part_of_a_key() -> None:
    tags = eval_tags("my.set v2", "test", {"micro_auc": 0.5}, "r", "per-video", "/d")
    assert "mnad.eval.my_set_v2.test.micro_auc" in tags
    assert recorded(tags, "my.set v2", "test") == {"micro_auc": 0.5}
    other = eval_tags("ped2", "test", {}, "r", "per-video", "/d")
    train = eval_tags("avenue", "train", {}, "r", "per-video", "/d")
    assert evaluated_datasets({**tags, **other, **train}, "test") == ("my_set_v2", "ped2")
    assert promote_key("champion") == "mnad.promote.champion"


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("alias", {"alias": "latest"}),
        ("alias", {"alias": "v3"}),
        ("alias", {"alias": "champ ion"}),
        ("over", {"alias": "champion", "over": "Latest"}),
        ("metric", {"alias": "champion", "metric": "accuracy"}),
        ("actors", {"alias": "champion", "actors": -1}),
    ],
)
def test_promote_options_mlflow_would_refuse_are_refused_first(field, kwargs) -> None:
    with pytest.raises(OptionError) as err:
        PromoteConfig(model="models:/m/1", **kwargs)
    assert err.value.field == field


def test_over_defaults_to_the_alias() -> None:
    assert PromoteConfig(model="models:/m/1", alias="champion").incumbent_alias == "champion"
    config = PromoteConfig(model="models:/m/1", alias="champion", over="staging")
    assert config.incumbent_alias == "staging"
