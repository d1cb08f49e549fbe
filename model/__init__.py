"""Training and export tooling (torch). The path of `gaitid train`, in reading order:

    config.py + configs/*.yaml   the typed experiment
    dataset.py                   OpenGait-layout pkl trees on disk
    training_data.py             sequences in memory, PxK batches of uint8 windows, augmentation
    depthgait.py (modules.py)    the network, scaling the contract's raw inputs itself
    losses.py                    triplet + cross-entropy
    train.py                     the loop, checkpoints (checkpoint.py), validation (embedder.py, evaluation/)
    export.py                    checkpoint -> contract-v2 ONNX; upgrade_v1 for older files
"""
