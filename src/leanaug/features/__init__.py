"""Featurizers: images -> fixed-length vectors for the logistic classifier.

``FEATURIZERS`` maps names to classes: ``pixels`` (raw pixels), ``smallcnn`` (the
paper's MNIST CNN, 512-d) and ``resnet`` (CIFAR pre-activation ResNet, pooled features).
"""

from leanaug.features.base import FEATURIZERS, Featurizer, as_float_images
from leanaug.features.pixels import PixelFeaturizer
from leanaug.features.trained import ResNetFeaturizer, SmallCNNFeaturizer, TrainedNetFeaturizer

__all__ = [
    "FEATURIZERS",
    "Featurizer",
    "PixelFeaturizer",
    "ResNetFeaturizer",
    "SmallCNNFeaturizer",
    "TrainedNetFeaturizer",
    "as_float_images",
]
