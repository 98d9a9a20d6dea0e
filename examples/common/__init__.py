"""What every example shares: data, input pipeline, the training loop, run outputs, flags.

A model family (``examples/nf_resnet``, ``examples/vit``) brings its model, its optimizer
and its presets, and plugs them into :mod:`examples.common.trainer` as a
:class:`~examples.common.state.ModelFamily`.
"""
