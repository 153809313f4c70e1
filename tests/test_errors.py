"""cnnx's errors cross process boundaries: the joblib and submitit launchers pickle a job's
error back to the sweep. One whose constructor takes more than its message could not be
rebuilt there: the sweep ended with loky's "A result has failed to un-serialize" traceback
instead of the job's one-line error."""

import copy
import pickle

import pytest

from cnnx.errors import ConfigError, DataSplitsError, ReportedInputError, UnknownOptionError

ERRORS = {
    "UnknownOptionError": lambda: UnknownOptionError("unknown option loss.x for loss 'mse'; accepted: none",
                                                     "loss.x", maybe_inherited=False),
    "DataSplitsError": lambda: DataSplitsError("digits", "has no training images"),
    "ReportedInputError": lambda: ReportedInputError(ConfigError("trainer.epochs=0 is out of range")),
}


@pytest.mark.parametrize("make", ERRORS.values(), ids=ERRORS.keys())
@pytest.mark.parametrize("copy_of", [lambda e: pickle.loads(pickle.dumps(e)), copy.deepcopy], ids=["pickle", "deepcopy"])
def test_an_error_survives_pickling_with_its_message_and_attributes(make, copy_of):
    error = make()
    error.add_note("while loading the sweep's third job")  # what else an error may carry
    copied = copy_of(error)
    assert type(copied) is type(error) and str(copied) == str(error)
    attributes = {k: (type(v), str(v)) for k, v in vars(error).items()}
    assert {k: (type(v), str(v)) for k, v in vars(copied).items()} == attributes
    assert copied.__notes__ == ["while loading the sweep's third job"]
