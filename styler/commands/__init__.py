"""One module per `styler` command: parse what cli.py hands over, call the capabilities, report. Only cli.py
imports these."""
