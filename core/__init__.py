"""usher.core: the engine — state layout, numba kernels and the placement pipeline.

Pipeline files: ``layout`` (record layouts, plain Python) and ``state`` (struct-of-arrays
tables and the kernels' view of them), ``codes`` (outcomes, reasons, statuses),
``eligibility`` (which servers may take a session: the conditions every stage reads),
``loadindex`` (load index and selection key), ``groups`` and ``tree`` (per-group
tournament trees), ``placement`` (request → filter → score → pick), ``commit`` (commit
and release), ``explain``, and ``kernels`` (the exported ``@cfunc`` entry points and
``compile_settings``).
"""
