"""Training and export tooling (torch). The path of `gaitid train`, in reading order:

    config.py + configs/*.yaml   the typed experiment
    dataset.py                   OpenGait-layout pkl trees on disk
    training_data.py             sequences in memory, PxK batches of uint8 windows, augmentation
    depthgait.py (modules.py)    the network, scaling the contract's raw inputs itself
    losses.py                    triplet + cross-entropy
    speed.py, device_batches.py  the step made fast for the device; on CUDA the whole set on the device
    train.py                     the loop, checkpoints (checkpoint.py), validation (embedder.py, evaluation/)
    export.py                    checkpoint -> contract-v2 ONNX; upgrade_v1 for older files

OpenGait's trained networks (DeepGaitV2 2d/p3d/3d, GaitBase) and their checkpoint conversion live in
opengait/; `gaitid calibrate` on a dataset in calibrate.py.
"""
