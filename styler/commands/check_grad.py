"""`styler check-grad`: prove the instance-norm kernels (instancenorm/check.py does the work)."""

from __future__ import annotations

from styler.errors import StylerError


def main(device: str, json_output: bool) -> bool:
    """Whether every check passed; a device that cannot be checked is a StylerError."""
    from instancenorm import check

    try:
        return check.print_report(device=device, json_output=json_output)
    except check.DeviceError as error:
        raise StylerError(str(error)) from None
