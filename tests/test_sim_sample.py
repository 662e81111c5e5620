"""The sample handler's normals: drawn in blocks, the same stream as one
``standard_normal(2 m)`` call per sample."""

from __future__ import annotations

import numpy as np

from usher.sim.sample import Sampler


def _blocked(seed, n_srv, ms):
    """The draws a Sampler's ``_normals`` hands out for powered counts ``ms``."""
    smp = Sampler.__new__(Sampler)  # only the generator and the buffer: no day
    smp.normal = np.random.default_rng([seed, 31]).standard_normal
    smp.n_srv = n_srv
    smp.noise = np.zeros(3 * 2 * n_srv)
    smp.noise_at = smp.noise.shape[0]
    out = []
    for m in ms:
        view = smp._normals()
        assert view.shape[0] >= 2 * n_srv
        out.append(view[:2 * m].copy())
        smp.noise_at += 2 * m
    return out


def test_blocked_normals_are_the_per_sample_stream():
    rng = np.random.default_rng(3)
    for seed in range(12):
        n_srv = int(rng.integers(1, 60))
        ms = rng.integers(0, n_srv + 1, 40)
        ms[::7] = 0  # samples with nothing powered draw nothing
        ms[1::9] = n_srv  # and with everything powered
        per_call = np.random.default_rng([seed, 31]).standard_normal
        for m, got in zip(ms, _blocked(seed, n_srv, ms)):
            want = per_call(2 * int(m))
            assert got.tobytes() == want.tobytes()
