"""Project exceptions.

Every error a user can cause is a ``CnnxError``: the CLI prints its message on one line and
exits non-zero instead of showing a traceback. Messages name the offending key or value and
what was expected.
"""


def flat_message(error: BaseException) -> str:
    """``error``'s message on one line, or its type's name when it has none: zipfile, NumPy,
    Pillow and scikit-learn spread some messages over several lines."""
    return " ".join(str(error).split()) or type(error).__name__


class CnnxError(Exception):
    """Base class for errors caused by user input (configs, data, files)."""


class ConfigError(CnnxError, ValueError):
    """A config value is missing, of the wrong type or outside the accepted values."""


class UnknownOptionError(ConfigError):
    """An option name that a component's factory does not take, at config key ``key``.

    ``maybe_inherited``: a preset or another config group may have put it there, which the
    command line's error says (with the ``~key`` that drops it) unless the user typed the key.
    """

    def __init__(self, message: str, key: str, maybe_inherited: bool = True) -> None:
        super().__init__(message)
        self.key = key
        self.maybe_inherited = maybe_inherited

    def __reduce__(self):  # joblib and submitit pickle a job's error back to the sweep
        return type(self), (str(self), self.key, self.maybe_inherited), self.__dict__


class ShapeError(CnnxError, ValueError):
    """Layer shapes do not fit together."""


class PluginError(CnnxError, LookupError):
    """A component name is unknown, claimed twice, or its plugin fails to import."""


class UnknownComponentError(PluginError):
    """No distribution registers the name: the config's to fix, where a conflict or an import
    failure is the installed plugins' (``cnnx plugins --check`` names those by entry point)."""


class DataError(CnnxError, ValueError):
    """A dataset or input array is unusable (empty, NaN, mismatched lengths, ...)."""


class DataSplitsError(DataError):
    """``DataSplits`` refused what a loader built: it cannot tell which loader that was, so the
    registry, which called it, names the entry point and distribution before ``problem``."""

    def __init__(self, dataset_name: str, problem: str):
        super().__init__(f"dataset {dataset_name!r} {problem}")
        self.dataset_name = dataset_name
        self.problem = problem

    def __reduce__(self):  # errors of a sweep's jobs are pickled (joblib, submitit)
        return type(self), (self.dataset_name, self.problem), self.__dict__


class CheckpointError(CnnxError, ValueError):
    """A weights or checkpoint file is truncated, foreign or does not fit the model."""


class ReportedInputError(BaseException):
    """Carries a user error of a single run out of its Hydra job untouched.

    Hydra catches every ``Exception`` a job raises and writes "Error executing job with
    overrides: …" above it, which would turn the CLI's one-line error into two lines. A
    ``BaseException`` passes through, and the CLI reports ``error`` as its one line.
    """

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error

    def __reduce__(self):
        return type(self), (self.error,), self.__dict__
