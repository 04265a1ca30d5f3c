"""The `styler` command line: one function per command, each parsing options and calling one module."""

from __future__ import annotations

import functools
import sys
from typing import Annotated, Callable

import typer

from styler.errors import StylerError

app = typer.Typer(
    name="styler",
    help="Fast neural style transfer with its own instance-norm kernels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def user_errors_exit_2(command: Callable) -> Callable:
    """Turn a StylerError into one line on stderr and exit code 2 (no traceback for a user's mistake)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except StylerError as error:
            print(f"styler: error: {error}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("styler: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


@app.callback()
def main() -> None:
    """Fast neural style transfer: train a style, stylize photos, check the kernels."""


@app.command("check-grad")
@user_errors_exit_2
def check_grad(
    device: Annotated[str, typer.Option(help="Where to test the kernels: cpu, cuda or all (cuda when present).")] = "all",
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON for scripts.")] = False,
) -> None:
    """Prove the instance-norm kernels: gradcheck in float64 and comparison with a float64 reference."""
    from styler import check_grad as run

    ok = run.main(device=device, json_output=json_output)
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    app()
