"""The one place that knows Remora's version."""


def remora_version() -> str:
    from importlib import metadata  # not at import: it pulls in email, ~2.6 MiB per process

    try:
        return metadata.version("remora")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0.0.0+source"
