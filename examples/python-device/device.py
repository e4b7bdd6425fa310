#!/usr/bin/env python3
"""A device in Python with paho-mqtt and the mqseal package: it logs in with a login
token made from its own key, follows key updates on the control topics, publishes
sealed readings, and reads (opens) its groups' messages.

    python3 device.py --device DIR --host HOST --port PORT --publish TOPIC [--subscribe FILTER]...

Every line read from standard input is sealed for TOPIC and published at QoS 1; at the
end of input it waits for the broker's acknowledgements, disconnects and exits. It
writes one line per event to standard output (the same lines as examples/c-device):

    ready                                    subscribed (control topics and filters), keys current
    published TOPIC                          the broker accepted it (MQTT 5 PUBACK success)
    publish-refused TOPIC reason=0xNN        the broker refused it (e.g. 0x87: not authorized)
    seal-failed TOPIC TOKEN                  the library refused to seal it (e.g. not-a-publisher)
    message TOPIC SENDER GROUP EPOCH PAYLOAD a message opened (signature, epoch, replay checked)
    rejected TOPIC TOKEN                     a message that could not be opened, and why
    plain TOPIC PAYLOAD                      a message on a topic no group protects
    keys-updated policy=P bundle=B           a key rotation or policy change was applied
    control-refused TOPIC TOKEN              a control document that did not verify
"""

import argparse
import sys
import threading

from mqseal import Device, MqsealError
from mqseal.mqtt import SealedClient


def say(line: str) -> None:
    # Callbacks run on paho's thread, the publishing on the main one: one line at a time.
    with say.lock:
        print(line, flush=True)


say.lock = threading.Lock()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", required=True, help="the joined device directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--publish", required=True, metavar="TOPIC", help="the topic each input line is sealed for")
    parser.add_argument("--subscribe", action="append", default=[], metavar="FILTER", help="a filter to read (repeatable)")
    args = parser.parse_args()

    device = Device.load(args.device)
    pending = threading.Semaphore(0)
    in_flight = 0

    def on_published(mid, reason):
        if reason.is_failure:
            say(f"publish-refused {args.publish} reason=0x{reason.value:02x}")
        else:
            say(f"published {args.publish}")
        pending.release()

    client = SealedClient(
        device,
        args.host,
        args.port,
        on_message=lambda topic, m: say(f"message {topic} {m.sender} {m.group} {m.epoch} {m.payload.decode(errors='replace')}"),
        on_plain=lambda topic, payload: say(f"plain {topic} {payload.decode(errors='replace')}"),
        on_rejected=lambda topic, error: say(f"rejected {topic} {error.reason}"),
        on_keys_updated=lambda policy, bundle: say(f"keys-updated policy={policy} bundle={bundle}"),
        on_control_refused=lambda topic, error: say(f"control-refused {topic} {error.reason}"),
        on_published=on_published,
    )
    client.connect(args.subscribe)
    say("ready")
    for line in sys.stdin:
        try:
            client.publish(args.publish, line.rstrip("\n").encode(), qos=1)
            in_flight += 1
        except MqsealError as error:
            say(f"seal-failed {args.publish} {error.reason}")
    for _ in range(in_flight):
        if not pending.acquire(timeout=30):
            print("mqseal python-device: the broker did not acknowledge every publish", file=sys.stderr)
            return 1
    client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
