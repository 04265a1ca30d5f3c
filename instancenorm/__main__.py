"""`python -m instancenorm`: which kernels this build has and which can run here."""

import torch

import instancenorm

print(f"instancenorm: compiled kernels for {', '.join(instancenorm.compiled_devices)}")
print(
    f"usable here: {', '.join(instancenorm.usable_devices())} (torch {torch.__version__}, "
    f"CUDA runtime {torch.version.cuda or 'none'}, GPU {'yes' if torch.cuda.is_available() else 'no'})"
)
