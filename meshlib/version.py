"""The one place that knows Remora's version."""

from importlib import metadata


def remora_version() -> str:
    try:
        return metadata.version("remora")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0.0.0+source"
