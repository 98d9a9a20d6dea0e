"""What every example shares: data, input pipeline, the training loop, run outputs, flags.

A model family (``examples/nf_resnet``, ``examples/vit``) brings only what is its own:

- ``configs/``: a ``TrainConfig`` dataclass that subclasses
  :class:`~examples.common.config.LoopConfig` (adding its model's and optimizer's fields,
  each documented in the class's ``Attributes:``), and presets returned by
  ``get_config(name)``;
- its model (``create_model(config, num_classes, in_features, rngs) -> nnx.Module``, logits
  from NHWC images; ``nnx.BatchStat`` state is carried by the
  :class:`~examples.common.state.TrainState`) and its optimizer
  (``create_optimizer(config, total_steps, steps_per_epoch) -> (tx, schedule)``), bundled
  as a :class:`~examples.common.state.ModelFamily`;
- ``train.py``: ``create_train_state`` and ``train_and_evaluate`` bound to that family
  (:func:`examples.common.state.create_train_state`,
  :func:`examples.common.trainer.train_and_evaluate`);
- ``main.py``: :func:`examples.common.flags.parse` (one flag per config field), then
  :mod:`examples.common.launch` and ``train_and_evaluate``.

Runs write ``config.json``, ``metrics.jsonl`` and ``summary.json``
(:mod:`examples.common.runs` names them); plots and experiment reports read them back with
:mod:`experiments.runs` (``python -m experiments.plot``, ``python -m experiments``).
"""
