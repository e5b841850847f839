"""The method's math: diffusion noise, visual dependence (Eq. 5.1), token weights (Eq. 5.3-5.5), losses and the
masked-logits forward passes they are computed from. Pure tensor functions; no model family, no data format."""
