import pytest

from cnnx.override_text import override_key, override_key_value


@pytest.mark.parametrize(("override", "expected"), [
    ("optimizer.lr=0.1", ("optimizer.lr", "0.1")),
    ("+model.layers.conv1.stride=2", ("model.layers.conv1.stride", "2")),
    ("++seed=3", ("seed", "3")),
    ("~tracking", ("tracking", "")),
    ("~model.layers.drop=dropout", ("model.layers.drop", "dropout")),
    ("dataset.path='a=b'", ("dataset.path", "'a=b'")),  # only the first = separates
    ("optimizer=adam,sgd", ("optimizer", "adam,sgd")),
])
def test_key_and_value_as_typed(override, expected):
    assert override_key_value(override) == expected
    assert override_key(override) == expected[0]
