"""What the examples share that is not about training itself.

Each example (``examples/nf_resnet``, ``examples/vit``) keeps its optimizer, its training
and evaluation steps and its loop in its own ``train.py``, read top to bottom as in
Flax's examples. What they share is here:

- data: :mod:`~examples.common.datasets` (Fashion-MNIST, MNIST, CIFAR-10 files) and
  :mod:`~examples.common.input_pipeline` (grain loaders, on-device augmentation, device
  prefetching);
- devices: :mod:`~examples.common.devices` (the data-parallel mesh, ``--cpu-devices``,
  microbatch counts, the compute dtype);
- run bookkeeping: :mod:`~examples.common.workdir` (one run per directory, ``--resume``),
  :mod:`~examples.common.checkpointing` (Orbax), :mod:`~examples.common.preemption`
  (SIGTERM/SIGINT), :mod:`~examples.common.reporting` (``metrics.jsonl``, progress,
  ``summary.json``);
- the command line: :mod:`~examples.common.config` (the fields every example has),
  :mod:`~examples.common.flags` (one flag per field), :mod:`~examples.common.launch`
  (logging, ``jax.distributed``, exit status), :mod:`~examples.common.errors` (one-line
  user errors), :mod:`~examples.common.evaluation` (the ``evaluate`` commands).
"""
