"""leanaug: lean data augmentation.

Pipeline folders: ``data`` -> ``augment`` -> ``features`` -> ``scores`` -> ``policies``
-> ``experiments`` for augmentation subsampling (Kuchnik & Smith, ICLR 2019), and
``distill`` for trajectory matching (Cazenavette et al., CVPR 2022) and learned
augmentation. ``cli`` is a thin typer layer over them.
"""

__version__ = "0.1.0"
