"""What `mnad run` does with a stage, from its completion alone: no Ray, no files."""

from __future__ import annotations

import pytest

from pipelines.spec import decide
from pipelines.stage import Completion

DONE = Completion.done(result={"model_uri": "models:/m/1"}, reason="run x registered m/1")
DIED = Completion.missing("run x has state but no marker: its driver died", partial=True)
NEW = Completion.missing("no run yet")


@pytest.mark.parametrize(
    ("completion", "force", "action", "reason"),
    [
        (DONE, False, "skip", "run x registered m/1"),  # complete: read the result back
        (DIED, False, "resume", "run x has state but no marker: its driver died"),
        (NEW, False, "fresh", "no run yet"),
        (DONE, True, "fresh", "--force"),  # --force beats a complete stage
        (DIED, True, "fresh", "--force"),  # and an interrupted one: its state is discarded
        (NEW, True, "fresh", "--force"),
    ],
)
def test_a_stage_is_skipped_resumed_or_run_fresh(
    completion: Completion, force: bool, action: str, reason: str
) -> None:
    step = decide(completion, force)
    assert (step.action, step.reason) == (action, reason)


def test_a_complete_stage_carries_its_result_and_an_incomplete_one_none() -> None:
    assert DONE.complete and DONE.result == {"model_uri": "models:/m/1"} and not DONE.partial
    assert not NEW.complete and NEW.result is None and not NEW.partial
    assert DIED.partial and not DIED.complete
