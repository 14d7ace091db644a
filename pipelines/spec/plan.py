"""What `mnad run` does with each stage: a pure decision, from the stage's own completion.

No I/O and no Ray: the stage's ``completion(config)`` has looked at its outputs; this says
what follows from that and ``--force``:

- ``skip``: the outputs are complete and current; the stage's result is read back from them.
- ``resume``: an earlier run was interrupted (its driver died) and left state that a new run
  continues: a training run's checkpoints, the videos already scored.
- ``fresh``: run from the start; whatever partial state is there is discarded first (a run
  that died before it could be continued, or every output under ``--force``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from pipelines.stage import Completion

Action = Literal["skip", "resume", "fresh"]


class Step(NamedTuple):
    """What to do with one stage, and why (the line `mnad run` prints)."""

    action: Action
    reason: str


def decide(completion: Completion, force: bool) -> Step:
    """The step for a stage whose outputs are as ``completion`` says."""
    if force:
        return Step("fresh", "--force")
    if completion.complete:
        return Step("skip", completion.reason)
    if completion.partial:
        return Step("resume", completion.reason)
    return Step("fresh", completion.reason)


__all__ = ["Action", "Step", "decide"]
