"""`python -m styler`: the same command line as the installed `styler` script."""

from styler.cli import app

app(prog_name="styler")
