"""cnnx: convolutional networks from scratch in NumPy, composed by Hydra, tracked by MLflow."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cnnx")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from cnnx.engine.grad_mode import no_grad  # noqa: E402
from cnnx.engine.model import Model, build_model  # noqa: E402

__all__ = ["Model", "build_model", "no_grad", "__version__"]
