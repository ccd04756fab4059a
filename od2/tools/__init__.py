"""The application layer: what the ``od2`` commands do beyond training and evaluation.

``od2 data show|stats|convert`` (:mod:`.show`, :mod:`.stats`, :mod:`.convert`, wired in :mod:`.data_cli`),
``od2 model-info`` (:mod:`.model_info`), ``od2 lr-plot`` (:mod:`.lr_plot`) and ``od2 report`` (:mod:`.report`).
These modules sit above the library (config, layers, modeling, data, evaluation, engine) and may import any of
it; nothing in the library imports them.
"""
