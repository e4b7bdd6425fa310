"""The exception every mqseal call raises (the native module raises it too)."""


class MqsealError(Exception):
    """A refusal or failure, named by its reason token (docs/REASONS.md).

    ``reason`` is the token (``"bad-signature"``, ``"replay"``, ``"not-a-publisher"``,
    ``"doc-wrong-authority"``, ...); ``message`` says what and where.
    """

    reason: str
    message: str

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{message} [{reason}]")
        self.reason = reason
        self.message = message
