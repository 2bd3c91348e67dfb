"""Independent reference for the VGGish front end: Essentia's own log-mel frames.

Test and benchmark helper, not library code: ``tests/test_vggish.py`` checks
:func:`mirflow.models.vggish.log_mel_frames` against it and ``benchmarks/classifiers.py`` reports
the difference on real music. Needs the ``essentia`` package.
"""

from __future__ import annotations

import numpy as np


def essentia_reference_frames(signal: np.ndarray) -> np.ndarray:
    """Essentia's log-mel frames ``(n_frames, 64)`` for ``signal`` (16 kHz mono): what
    ``TensorflowPredictVGGish`` feeds its model, i.e. a streaming ``FrameCutter(400, 160)`` into
    ``TensorflowInputVGGish``."""
    import essentia
    import essentia.streaming as ess

    essentia.log.infoActive = False
    vec = ess.VectorInput(np.asarray(signal, dtype=np.float32))
    cutter = ess.FrameCutter(frameSize=400, hopSize=160)
    mel = ess.TensorflowInputVGGish()
    pool = essentia.Pool()
    vec.data >> cutter.signal
    cutter.frame >> mel.frame
    mel.bands >> (pool, "bands")
    essentia.run(vec)
    return np.array(pool["bands"])
