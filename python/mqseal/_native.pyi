from os import PathLike
from typing import Literal, Optional, Union

class Message:
    """A message that was opened: verified (sender's role, key epoch, replay, signature) and decrypted."""

    @property
    def payload(self) -> bytes: ...
    @property
    def sender(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def timestamp_ms(self) -> int: ...

class Device:
    """A joined device directory, loaded. Thread-safe (calls are serialised).

    The first ``seal`` takes the directory's sequence-counter lock and the first ``open``
    its replay-state lock, each held until the object is freed.
    """

    @staticmethod
    def load(dir: Union[str, "PathLike[str]"]) -> "Device":
        """Loads a directory made by ``mqseal keygen`` and ``mqseal join``; the stored policy is verified again."""
    @staticmethod
    def join(
        dir: Union[str, "PathLike[str]"], authority: Union[str, "PathLike[str]"], policy: bytes, bundle: bytes
    ) -> "Device":
        """Joins (or re-joins) a realm from the signed policy and this device's bundle, verified against the
        authority's public key file (as ``mqseal join``), and loads the directory."""
    @staticmethod
    def join_login_token(dir: Union[str, "PathLike[str]"], client_id: str, username: Optional[str] = None) -> str:
        """A login token for a directory that has not joined yet (username: the device id unless given)."""
    @property
    def id(self) -> str: ...
    @property
    def username(self) -> str:
        """The MQTT username the device logs in with (from the policy in force)."""
    @property
    def policy_version(self) -> int: ...
    @property
    def bundle_version(self) -> int: ...
    @property
    def control_topics(self) -> list[str]:
        """Subscribe to these (QoS 1) and pass their messages to ``apply_control``: the policy, then this device's bundle."""
    def group_of_topic(self, topic: str) -> Optional[str]:
        """The group owning ``topic``, or None for an unprotected topic (whose messages travel as they are)."""
    def group_epoch(self, group: str) -> Optional[int]: ...
    def login_token(self, client_id: str) -> str:
        """A fresh login token: the MQTT password, valid once, for this client id and ``username``."""
    def seal(self, topic: str, plaintext: bytes) -> bytes:
        """Signs and encrypts ``plaintext`` for the group owning ``topic``; publish the result on exactly that topic."""
    def open(self, topic: str, payload: bytes) -> Message:
        """Opens a payload received on ``topic``; raises MqsealError with the reason it was refused."""
    def apply_control(self, topic: str, payload: bytes) -> Literal["not-control", "unchanged", "updated"]:
        """Applies a policy or key bundle received on a control topic (verified against the authority key)."""
