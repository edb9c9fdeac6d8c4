"""MiDaS DPT-Hybrid, the depth estimator of the SD 2 depth model, written by hand: the ResNet-50 v2
stem (resnet_v2.py), the hybrid ViT-B/16 over it (vit_hybrid.py), the dense prediction decoder
(dpt.py) and the original's input transform (transform.py)."""

from .dpt import MiDaS

__all__ = ["MiDaS"]
