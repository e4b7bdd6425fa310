"""mqseal for devices: the same device core as the ``mqseal`` CLI and the C library.

>>> from mqseal import Device
>>> device = Device.load("sensor1")            # a directory made by `mqseal keygen` and `mqseal join`
>>> envelope = device.seal("plant/hall1/temp", b"21.5")
>>> message = other_device.open("plant/hall1/temp", envelope)   # sender, group, epoch, payload

Every failure raises :class:`MqsealError`, whose ``reason`` is the token of docs/REASONS.md.
``mqseal.mqtt.SealedClient`` (needs paho-mqtt) logs in with a fresh token, follows key
updates and seals/opens transparently.
"""

from ._errors import MqsealError
from ._native import Device, Message

__all__ = ["Device", "Message", "MqsealError"]
