"""The style network and everything that carries or runs it: its shape (architecture, no torch), the paper's network
(network), its memory-saving inference paths and statistics hook (inference), model files and the shipped models'
manifest (model_files), training checkpoints as files (checkpoints), and a model applied to images (stylizer)."""
