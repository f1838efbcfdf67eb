"""The smoothing defaults of the differentiable stand-ins that adaptive attacks descend, in a module
of their own (no torch, no imports) so that the attacks' light factories can name them:
`DEFAULT_BETA`, the softplus sharpness of the smoothed network whose maps are differentiated
(`tracekit.saliency.smoothed`, pre-activation units), and `DEFAULT_SIGMA`, the Gaussian kernel's
width in the local-entropy surrogate (`tracekit.scores.entropy_surrogate`, 8-bit gray levels)."""

DEFAULT_BETA = 10.0
DEFAULT_SIGMA = 1.0
