"""OpenGait's trained DeepGaitV2 and GaitBase models served here: their architectures over our blocks
(architectures.py), reading their checkpoints and configs (source.py), conversion to a contract ONNX
file (convert.py), the public zoo entries (zoo.py), and seeding DepthGait's encoders (init_from.py).
Nothing of OpenGait's code is in this package; its checkpoint key names are data in the key table."""
