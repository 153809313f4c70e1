from cnnx.engine.layers.dense import Dense


class WrongBackwardDense(Dense):
    """A dense layer whose weight gradient is 1% too large: the kind of slip that still
    trains, and that a finite-difference check must catch."""

    def backward(self, grad_output):
        grad_input = super().backward(grad_output)
        self.params["weight"].grad = self.params["weight"].grad * 1.01
        return grad_input


def not_a_layer(out_features=1):
    return None
