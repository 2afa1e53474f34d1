"""PASCAL VOC 2012 semantic segmentation (``voc2012``); importing this package registers the task."""

from .task import *  # noqa: F403
from .task import IGNORE, MEAN, NUM_CLASSES, STD, TrainTransform, read_pair, voc_palette  # noqa: F401
from .task import __all__  # noqa: F401
