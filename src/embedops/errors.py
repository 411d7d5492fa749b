"""One exception family. The CLI maps it to exit codes and the server to HTTP statuses, each in one place."""

from __future__ import annotations

from pathlib import Path


class EmbedopsError(Exception):
    """Base of every error a user can act on; `exit_code` and `http_status` say how shells report it."""

    exit_code = 2
    http_status = 400


class ConfigError(EmbedopsError):
    """A flag, setting or combination of them that cannot work."""


class DataError(EmbedopsError):
    """Bad training or evaluation data, located compiler-style as PATH:LINE; line 0 is the file as a
    whole (missing, a directory, an unknown type), shown as PATH alone since no line 0 exists."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = message
        super().__init__(f"{self.path}:{line}: {message}" if line > 0 else f"{self.path}: {message}")


class ModelNotFoundError(EmbedopsError):
    """A model reference that resolves to nothing loadable."""

    http_status = 404


class ArtifactError(EmbedopsError):
    """A model artifact whose manifest or files are missing, malformed or altered."""


class OutputExistsError(EmbedopsError):
    """The output path is taken and the user did not ask to replace it."""


class MissingDependencyError(EmbedopsError):
    """An optional extra is needed for this operation but not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"this needs the '{module}' package, which is not installed; "
            f"install it with: pip install 'embedops[{extra}]' (or: make train-deps)"
        )


class GateFailedError(EmbedopsError):
    """A quality gate (metric threshold, drift limit) was violated: the result is not good enough."""

    exit_code = 1


class MainProcessError(EmbedopsError):
    """Rank 0's error, raised on the other processes of a multi-process run so that every one stops with
    it; rank 0 reports it and exits with its code, the others stop quietly."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RequestError(EmbedopsError):
    """A served request that cannot be answered: bad input, a limit, a key, overload, a model failure.

    One class carries the HTTP status and a machine-readable `code`, so the server maps every refusal
    to a response in one place; `retry_after` (seconds) is set where trying again later will work.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 422,
        code: str = "invalid_request",
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code
        self.param = param
        self.retry_after = retry_after
