"""The training workbench: synthetic recall tasks, a small training loop, architecture comparison, DDP/FSDP2.

``hybdsl train FILE.hyb --task mqar`` and ``hybdsl compare A.hyb B.hyb --task mqar`` are built on it::

    from hybriddsl.workbench import make_task, train
    task = make_task("mqar", seq_len=64, num_kv_pairs=8)
    result = train("examples/recall/hybrid.hyb", task, steps=300)
    result.final_accuracy
"""

from hybriddsl.workbench.tasks import TASKS, Task, make_task
from hybriddsl.workbench.train import TrainConfig, TrainResult, build_for_task, train

__all__ = ["TASKS", "Task", "TrainConfig", "TrainResult", "build_for_task", "make_task", "train"]
