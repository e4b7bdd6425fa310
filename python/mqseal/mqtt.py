"""A paho-mqtt client that is an mqseal device: it logs in with a fresh login token
(every connection attempt, reconnects included), subscribes to the device's control
topics and applies the key updates that arrive there, seals what it publishes on
protected topics and opens what it receives on them.

    client = SealedClient(Device.load("sensor1"), "broker.example", 1883,
                          on_message=lambda topic, message: print(topic, message.payload))
    client.connect(["plant/hall1/#"])          # returns once the subscriptions are acknowledged
    client.publish("plant/hall1/temp", b"21.5").wait_for_publish()

Callbacks run on paho's network thread.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Optional, Sequence

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ._errors import MqsealError
from ._native import Device, Message

MessageCallback = Callable[[str, Message], None]
PlainCallback = Callable[[str, bytes], None]
RejectedCallback = Callable[[str, MqsealError], None]
UpdatedCallback = Callable[[int, int], None]
PublishedCallback = Callable[[int, ReasonCode], None]


class SealedClient:
    """An MQTT 5 client logged in as ``device`` (see the module docs)."""

    def __init__(
        self,
        device: Device,
        host: str,
        port: int = 1883,
        *,
        client_id: Optional[str] = None,
        keepalive: int = 60,
        on_message: Optional[MessageCallback] = None,
        on_plain: Optional[PlainCallback] = None,
        on_rejected: Optional[RejectedCallback] = None,
        on_keys_updated: Optional[UpdatedCallback] = None,
        on_control_refused: Optional[RejectedCallback] = None,
        on_published: Optional[PublishedCallback] = None,
    ) -> None:
        self.device = device
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.client_id = client_id or f"{device.id}-py-{os.getpid()}"
        self.on_message = on_message
        self.on_plain = on_plain
        self.on_rejected = on_rejected
        self.on_keys_updated = on_keys_updated
        self.on_control_refused = on_control_refused
        self.on_published = on_published
        self._filters: list[str] = []
        self._ready = threading.Event()
        self._ready_mid: Optional[int] = None
        self._refused: Optional[str] = None
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish

    @property
    def paho(self) -> paho.Client:
        """The underlying paho client (for options this class does not cover)."""
        return self._client

    def connect(self, filters: Sequence[str] = (), timeout: float = 10.0) -> None:
        """Connects, subscribes to the control topics and then to ``filters`` (QoS 1), and
        returns once the broker acknowledged them: by then the retained policy and bundle
        have been applied, so the keys are current. Raises ConnectionError on a refused login."""
        self._filters = list(filters)
        self._set_token()
        self._client.connect(self.host, self.port, self.keepalive)
        self._client.loop_start()
        if not self._ready.wait(timeout):
            self._client.loop_stop()
            raise ConnectionError(self._refused or f"no answer from {self.host}:{self.port} within {timeout} s")
        if self._refused:
            raise ConnectionError(self._refused)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        """Publishes ``payload`` on ``topic``: sealed if a group owns the topic, as it is otherwise."""
        if self.device.group_of_topic(topic) is not None:
            payload = self.device.seal(topic, payload)
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    def disconnect(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # paho callbacks (its network thread)

    def _set_token(self) -> None:
        # A token logs in once: every attempt, reconnects included, needs a fresh one.
        self._client.username_pw_set(self.device.username, self.device.login_token(self.client_id))

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: ReasonCode, properties: object) -> None:
        if reason.is_failure:
            self._refused = f"login refused by {self.host}:{self.port}: {reason}"
            self._ready.set()
            client.disconnect()
            return
        # Control topics first: their retained documents arrive before the next SUBACK.
        client.subscribe([(topic, 1) for topic in self.device.control_topics])
        marker = self._filters or [f"$mqseal/identity/{self.device.id}"]
        _, self._ready_mid = client.subscribe([(f, 1) for f in marker])

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object, reason: ReasonCode, properties: object) -> None:
        # paho reconnects with the credentials set now.
        self._set_token()

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, reasons: list, properties: object) -> None:
        if mid == self._ready_mid:
            self._ready.set()

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, reason: ReasonCode, properties: object) -> None:
        if self.on_published:
            self.on_published(mid, reason)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        topic, payload = msg.topic, bytes(msg.payload)
        try:
            outcome = self.device.apply_control(topic, payload)
        except MqsealError as error:
            if self.on_control_refused:
                self.on_control_refused(topic, error)
            return
        if outcome == "updated":
            if self.on_keys_updated:
                self.on_keys_updated(self.device.policy_version, self.device.bundle_version)
            return
        if outcome != "not-control":
            return
        if self.device.group_of_topic(topic) is None:
            if self.on_plain:
                self.on_plain(topic, payload)
            return
        try:
            message = self.device.open(topic, payload)
        except MqsealError as error:
            if self.on_rejected:
                self.on_rejected(topic, error)
            return
        if self.on_message:
            self.on_message(topic, message)
