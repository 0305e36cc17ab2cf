"""An interactive explorer of a trained model of the lab: draw a digit and watch the network think.

`python -m explorer` (or `make explore`) serves one local page: a drawing pad,
the prediction, every layer's signals, what a clicked unit looks at, and the
drawing's nearest test digits in pixel space and in a layer's feature space.
The model-side work is `conv_core`; this package only finds models and digits,
preprocesses drawings the way MNIST was made, and answers JSON.
"""
