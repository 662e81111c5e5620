"""usher.core: the engine — state layout, numba kernels and the placement pipeline.

Pipeline files: ``state`` (struct-of-arrays layout), ``loadindex`` (load index and
selection key), ``tree`` (per-group tournament trees), ``filter``/``score``/``pick``
stages live in ``placement`` (request → filter → score → pick), ``commit`` (commit and
release), ``kernels`` (the exported ``@cfunc`` entry points), ``explain``.
"""
