"""The input statistics the ImageNet backbones were trained on, and the Normalization layer of
keras.applications' EfficientNets that holds them."""

import keras
import numpy as np

# Torch-style ImageNet statistics of RGB images scaled to 0-1: what DenseNet201 and the
# EfficientNet weights (keras.applications' and the efficientnet package's) were trained on.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_VARIANCE = tuple(std**2 for std in IMAGENET_STD)


def normalization_layer(efficientnet):
    """The input Normalization layer of a keras.applications EfficientNet (B0-B7)."""
    found = [
        layer for layer in efficientnet.layers if isinstance(layer, keras.layers.Normalization)
    ]
    if len(found) != 1:
        raise RuntimeError(
            f"expected one Normalization layer in {efficientnet.name}, found {len(found)}: "
            f"keras.applications changed; petals.normalization needs updating"
        )
    return found[0]


def set_normalization(normalization, mean, variance):
    """Give an adapted Normalization layer new statistics."""
    normalization.adapt_mean.assign(np.asarray(mean, "float32"))
    normalization.adapt_variance.assign(np.asarray(variance, "float32"))
    # The layer computes with constants derived from its variables when it was built or loaded.
    normalization.finalize_state()
