"""Files in and out: atomic writes and file facts (files), photos read and written (images), the inputs a command
was given and the one folder walker (inputs), and the one output planner (outputs). No styler layer below errors."""
