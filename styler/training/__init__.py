"""`styler train`'s capability: options and defaults (config, no torch), what a run reads (data), the loss networks
(vgg16: all of VGG16; random_features), the losses, a run's parts and its step (trainer), the loop with its
checkpoints and previews (loop), --resume (resume) and torchrun processes (processes). The checkpoint file format
is model/checkpoints.py, as a checkpoint is also a model."""
