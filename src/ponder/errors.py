"""Errors a user can act on.

Everything ponder raises on bad input derives from PonderError; the CLI prints
the message without a traceback and the server maps it to an HTTP status.
"""


class PonderError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    http_status = 400
    code = "invalid_request"


class ModelNotFoundError(PonderError):
    http_status = 404
    code = "model_not_found"


class ModelFormatError(PonderError):
    """The file exists but is not a model ponder can read (truncated, bad magic, ...)."""

    code = "model_format"


class UnsupportedArchitectureError(ModelFormatError):
    code = "unsupported_architecture"


class UnsupportedTensorTypeError(ModelFormatError):
    code = "unsupported_tensor_type"


class TensorShapeError(ModelFormatError):
    code = "tensor_shape"


class ModelConfigError(ModelFormatError):
    """A hyperparameter is missing, of the wrong type, or out of range."""

    code = "model_config"


class ContextLengthError(PonderError):
    http_status = 413
    code = "context_length_exceeded"


class InvalidParameterError(PonderError):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class SamplingError(PonderError):
    """A token could not be drawn (non-finite logits): the request fails, the others go on."""

    http_status = 500
    code = "sampling_failed"
