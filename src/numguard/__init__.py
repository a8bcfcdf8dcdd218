"""numguard: numerical-accuracy gate for GroupNorm kernels in diffusion VAE decoders."""

__version__ = "0.1.0"
