"""cnnx-imagefolder: train cnnx models on a folder of your own images (one sub-folder per class)."""
