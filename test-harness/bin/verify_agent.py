#!/usr/bin/env python3
"""The baseline of scripts/bench (issue 16): what users build without mqseal.

A verify-and-republish agent in the paper's architecture, written with standard
libraries only (paho-mqtt, pyca/cryptography): a separate process subscribed to
an ingress topic on a plain Mosquitto, which checks each message's Ed25519
signature and republishes the valid ones to the delivery topic. Each ingress
payload is a 64-byte Ed25519 signature followed by the message it signs; the
agent republishes the message alone, at the QoS it was received with.

    verify_agent.py --port P --qos Q --keys FILE [--ingress ingress] [--delivery bench]

FILE is JSON: {"<ingress topic>": "<hex Ed25519 public key>", ...}. Prints
"ready" once subscribed; exits when its stdin closes, printing
"done verified=N rejected=M" (the bench stops it that way).
"""

import argparse
import json
import socket
import sys
import threading

import paho.mqtt.client as mqtt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNATURE_LEN = 64


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--qos", type=int, choices=(0, 1), required=True)
    parser.add_argument("--keys", required=True)
    parser.add_argument("--ingress", default="ingress")
    parser.add_argument("--delivery", default="bench")
    parser.add_argument("--inflight", type=int, default=20)
    args = parser.parse_args()

    with open(args.keys, encoding="utf-8") as f:
        keys = {topic: Ed25519PublicKey.from_public_bytes(bytes.fromhex(key)) for topic, key in json.load(f).items()}
    counts = {"verified": 0, "rejected": 0}
    prefix = args.ingress + "/"

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="verify-agent", protocol=mqtt.MQTTv311)
    client.username_pw_set("verify-agent")
    client.max_inflight_messages_set(args.inflight)

    def on_connect(c, _userdata, _flags, reason, _properties):
        if reason.is_failure:
            print(f"connect refused: {reason}", file=sys.stderr, flush=True)
            c.disconnect()
            return
        # paho leaves Nagle's algorithm on: each republished message would wait
        # for the broker's ACK of the one before. The bench's own clients set
        # TCP_NODELAY; so does the baseline, to be compared fairly.
        c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.subscribe(prefix + "#", args.qos)

    def on_subscribe(_c, _userdata, _mid, reasons, _properties):
        if any(r.is_failure for r in reasons):
            print(f"subscription refused: {reasons}", file=sys.stderr, flush=True)
            return
        print("ready", flush=True)

    def on_message(c, _userdata, msg):
        key = keys.get(msg.topic)
        payload = msg.payload
        if key is None or len(payload) < SIGNATURE_LEN:
            counts["rejected"] += 1
            return
        signature, message = payload[:SIGNATURE_LEN], payload[SIGNATURE_LEN:]
        try:
            key.verify(signature, message)
        except InvalidSignature:
            counts["rejected"] += 1
            return
        counts["verified"] += 1
        c.publish(args.delivery + "/" + msg.topic[len(prefix):], message, msg.qos)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", args.port, keepalive=0)

    def stop_when_stdin_closes():
        sys.stdin.read()
        client.disconnect()

    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    client.loop_forever()
    print(f"done verified={counts['verified']} rejected={counts['rejected']}", flush=True)


if __name__ == "__main__":
    main()
