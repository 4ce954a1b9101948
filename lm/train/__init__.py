"""The per-rank trainer every gradient stage shares (pretraining, SFT, reward model, student, GRPO).

Nothing here imports Ray: a rank is a process with a model, an optimizer and (when there are several
ranks) a ``torch.distributed`` default process group, whoever created it - a Ray Train worker
(pipelines/train/loop.py), an actor that called ``init_process_group`` itself (an RL learner), a
test, or a plain script. The modules, each with one job:

- ``config``:  ``StepConfig``, how a rank takes a step (strategy, compile, AdamW, schedule, clipping);
- ``optim``:   AdamW with decay on matrices only, and the warmup + cosine/linear schedule;
- ``models``:  the model a stage starts from: fresh weights, or a model directory;
- ``losses``:  ``Loss`` (a sum over targets and their count) and the next-token loss;
- ``packing``: several sequences in one row with document ids (lm/model.py masks between them);
- ``task``:    ``TrainTask``, what a stage supplies: batches with a resumable position, loss, evaluation;
- ``trainer``: ``Trainer``, DDP/FSDP2, bf16 on GPU, accumulation, normalisation, clipping, state;
- ``mfu``:     model FLOPs utilisation against a per-device peak table.

Import from the submodules (``from lm.train.trainer import Trainer``): this package's ``__init__``
stays empty so that reading a config does not import torch.
"""
