"""styler: fast neural style transfer on its own instance-norm kernels."""

__version__ = "0.1.0"
