"""The one Ray Train driver of every gradient stage: ``driver.fit(spec)`` runs a ``TrainTask``.

- ``config``:   ``TrainingConfig``, the fields every gradient stage shares (workers, resources,
                strategy, optimizer, schedule, checkpoints, tracking, fault injection);
- ``driver``:   the ``TorchTrainer`` with checkpoints, resume and ``FailureConfig``; checks a
                checkpoint can continue before any worker starts; sets aside checkpoints of other data;
- ``loop``:     what each Ray Train worker runs: restore, train, evaluate, checkpoint, report;
- ``tracking``: optional TensorBoard / Weights & Biases;
- ``curves``:   the metrics JSONL read back, loss plots and the report's table.
"""
