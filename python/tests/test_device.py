"""The mqseal package on a realm made with the real CLI (``$MQSEAL_CLI``, default
target/debug/mqseal): seal and open across devices, the reason tokens of refusals,
and that the type hints describe what the module really has.

    MQSEAL_CLI=target/debug/mqseal python -m unittest discover -s python/tests -v
"""

import ast
import os
import pathlib
import subprocess
import tempfile
import unittest

import mqseal
from mqseal import Device, MqsealError

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI = os.environ.get("MQSEAL_CLI", str(ROOT / "target" / "debug" / "mqseal"))


def cli(*args: str) -> None:
    subprocess.run([CLI, *args], check=True, capture_output=True)


class Realm:
    """alice publishes on g/#, bob reads."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="mqseal-py-")
        base = pathlib.Path(self.tmp.name)
        realm = str(base / "realm")
        cli("realm", "init", "--realm", realm)
        for name in ("alice", "bob"):
            cli("keygen", name, "--out", str(base / name))
            cli("device", "add", name, "--realm", realm, "--public", str(base / name / f"{name}.pub"))
        cli("group", "create", "g", "--realm", realm, "--topic", "g/#")
        cli("group", "add", "g", "alice", "--realm", realm, "--role", "pub")
        cli("group", "add", "g", "bob", "--realm", realm, "--role", "sub")
        cli("policy", "export", "--realm", realm, "--out", str(base / "policy.json"))
        for name in ("alice", "bob"):
            cli("bundle", "export", name, "--realm", realm, "--out", str(base / f"{name}.bundle"))
            cli("join", "--device", str(base / name), "--authority", f"{realm}/authority.pub",
                "--bundle", str(base / f"{name}.bundle"), "--policy", str(base / "policy.json"))
        self.alice = base / "alice"
        self.bob = base / "bob"
        # carol is registered but has not joined: the tests join her with Device.join.
        cli("keygen", "carol", "--out", str(base / "carol"))
        cli("device", "add", "carol", "--realm", realm, "--public", str(base / "carol" / "carol.pub"))
        cli("group", "add", "g", "carol", "--realm", realm, "--role", "sub")
        cli("policy", "export", "--realm", realm, "--out", str(base / "policy2.json"))
        cli("bundle", "export", "carol", "--realm", realm, "--out", str(base / "carol.bundle"))
        self.carol = base / "carol"
        self.carol_policy = (base / "policy2.json").read_bytes()
        self.carol_bundle = (base / "carol.bundle").read_bytes()
        self.authority = pathlib.Path(realm) / "authority.pub"


class DeviceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.realm = Realm()

    def test_seal_open_and_the_reasons_of_refusals(self) -> None:
        alice, bob = Device.load(self.realm.alice), Device.load(str(self.realm.bob))
        self.assertEqual((alice.id, alice.username), ("alice", "alice"))
        self.assertEqual(alice.control_topics, ["$mqseal/policy", "$mqseal/bundle/alice"])
        self.assertEqual(alice.group_of_topic("g/temp"), "g")
        self.assertIsNone(alice.group_of_topic("public/x"))
        self.assertEqual(alice.group_epoch("g"), 1)
        envelope = alice.seal("g/temp", b"21.5")
        message = bob.open("g/temp", envelope)
        self.assertEqual((message.payload, message.sender, message.group, message.epoch), (b"21.5", "alice", "g", 1))
        with self.assertRaises(MqsealError) as replay:
            bob.open("g/temp", envelope)
        self.assertEqual(replay.exception.reason, "replay")
        self.assertIn("[replay]", str(replay.exception))
        with self.assertRaises(MqsealError) as moved:
            bob.open("g/humidity", alice.seal("g/temp", b"x"))
        self.assertEqual(moved.exception.reason, "bad-signature")
        with self.assertRaises(MqsealError) as not_pub:
            bob.seal("g/temp", b"x")
        self.assertEqual(not_pub.exception.reason, "not-a-publisher")
        with self.assertRaises(MqsealError) as unprotected:
            alice.seal("public/x", b"x")
        self.assertEqual(unprotected.exception.reason, "not-protected")
        self.assertTrue(alice.login_token("alice-1").startswith("mqseal-login-v1."))
        self.assertEqual(alice.apply_control("g/temp", b""), "not-control")
        with self.assertRaises(MqsealError) as forged:
            alice.apply_control("$mqseal/policy", b'{"format":"mqseal-policy-v1"}')
        self.assertTrue(forged.exception.reason.startswith("doc-"), forged.exception.reason)

    def test_a_device_joins_from_the_documents(self) -> None:
        token = Device.join_login_token(self.realm.carol, "carol-join")
        self.assertTrue(token.startswith("mqseal-login-v1."))
        with self.assertRaises(MqsealError) as not_joined:
            Device.load(self.realm.carol)
        self.assertEqual(not_joined.exception.reason, "not-joined")
        with self.assertRaises(MqsealError) as forged:
            Device.join(self.realm.carol, self.realm.authority, self.realm.carol_policy + b" ", self.realm.carol_bundle)
        self.assertTrue(forged.exception.reason.startswith("doc-"), forged.exception.reason)
        carol = Device.join(self.realm.carol, self.realm.authority, self.realm.carol_policy, self.realm.carol_bundle)
        self.assertEqual((carol.id, carol.group_of_topic("g/x")), ("carol", "g"))

    def test_a_missing_directory_names_itself(self) -> None:
        with self.assertRaises(MqsealError) as missing:
            Device.load("/nonexistent/device")
        self.assertIn("/nonexistent/device", missing.exception.message)

    def test_the_type_hints_match_the_module(self) -> None:
        stub = ast.parse((pathlib.Path(mqseal.__file__).parent / "_native.pyi").read_text())
        self.assertTrue((pathlib.Path(mqseal.__file__).parent / "py.typed").exists())
        for cls in (c for c in stub.body if isinstance(c, ast.ClassDef)):
            runtime = getattr(mqseal, cls.name)
            names = {f.name for f in cls.body if isinstance(f, ast.FunctionDef)}
            for name in names:
                self.assertTrue(hasattr(runtime, name), f"{cls.name}.{name} is hinted but missing")
            public = {n for n in dir(runtime) if not n.startswith("_")}
            self.assertEqual(public - names, set(), f"{cls.name}: not hinted")


if __name__ == "__main__":
    unittest.main()
