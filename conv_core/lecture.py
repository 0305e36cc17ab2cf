"""The lecture's numbers: what every claim, check and report compares this lab's results with.

Source: Tapani Raiko, "Convolutional Networks", Aalto University, 2015 (slides
"Convolutional vs. non-convolutional", "Local connectivity", "Parameter
sharing", "Regularization by data augmentation", "Good representation?"), and
the Caffe notebooks the lecture shows (github.com/perellonieto/cnn_visualization_caffe).
"""

# Weights without biases, per layer: 5*5*9, 5*5*9*16, 7*7*16*10 for the CNN;
# 784*225, 225*144, 144*10 for the MLP.
WEIGHTS = {"seed_cnn": (225, 3600, 7840), "mlp": (176400, 32400, 1440)}
# Signal sizes: the input and each hidden layer (28*28, 28*28*9, 14*14*16 for the CNN).
SIGNALS = {"seed_cnn": (784, 7056, 3136), "mlp": (784, 225, 144)}
# 210240 / 11665: "about 18 times fewer weights".
WEIGHT_RATIO = round(sum(WEIGHTS["mlp"]) / sum(WEIGHTS["seed_cnn"]))

# 1-D, 5 inputs and 5 outputs: dense, only |x1 - x2| <= 1 kept, weights indexed by the offset only.
CONNECTIVITY_1D = {"inputs": 5, "outputs": 5, "radius": 1, "dense": 25, "local": 13, "shared": 3}

# "Cropping just 2 pixels gets you 9 times the data": 26x26 windows at 3x3 offsets.
AUGMENTATION_FACTOR = 9

# d(9A, 4A) / d(4A, 4B) for the Caffe notebooks' triplet, by layer: the 9 is closer
# in pixel space, the two 4s from conv2 on.
TRIPLET_RATIOS = {"pixels": 0.79, "conv1": 0.69, "pool1": 0.82, "conv2": 1.10, "logits": 3.20}
