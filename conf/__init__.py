# Makes cnnx.conf an importable package: Hydra finds pkg:// config roots only by their __init__.py.
