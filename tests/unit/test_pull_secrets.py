"""imagePullSecret: the Secret's shapes, its checks at apply, and what it rolls (nothing)."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from mctl.common import registryauth, validation
from mctl.scheduler import imagepin
from mctl.scheduler.objects import workload_hash
from mctl.v1 import types_pb2

REG = "registry.local:5000"


def decoded(auth: bytes) -> dict[str, str]:
    """host -> user:password of an auth.json."""
    return {h: base64.b64decode(e["auth"]).decode()
            for h, e in json.loads(auth)["auths"].items()}


def test_username_and_password_are_for_the_images_registry():
    auth = registryauth.auth_json({"username": b"bob", "password": b"s3:cret"}, REG)
    assert decoded(auth) == {REG: "bob:s3:cret"}


def test_a_docker_config_keeps_every_host_in_either_form():
    config = {"auths": {REG: {"auth": base64.b64encode(b"a:b").decode()},
                        "other.io": {"username": "c", "password": "d"}}}
    auth = registryauth.auth_json({".dockerconfigjson": json.dumps(config).encode()}, REG)
    assert decoded(auth) == {REG: "a:b", "other.io": "c:d"}


@pytest.mark.parametrize("data, message", [
    ({"username": b"bob"}, "needs keys username and password, or .dockerconfigjson"),
    ({"username": b"", "password": b"x"}, "username must be non-empty"),
    ({"username": b"a:b", "password": b"x"}, "hold no ':'"),
    ({"username": b"\xff", "password": b"x"}, "not UTF-8"),
    ({".dockerconfigjson": b"{"}, "is not JSON"),
    ({".dockerconfigjson": b"[]"}, 'no "auths"'),
    ({".dockerconfigjson": b'{"auths": {"r": 1}}'}, "auths.r is not an object"),
    ({".dockerconfigjson": b'{"auths": {"r": {"auth": "!!"}}}'}, "not base64"),
    ({".dockerconfigjson": b'{"auths": {"r": {"auth": "YWJj"}}}'}, "user:password"),
    ({".dockerconfigjson": b'{"auths": {"r": {"username": "u"}}}'}, "needs auth, or"),
])
def test_bad_secrets_get_one_line_without_their_values(data, message):
    with pytest.raises(registryauth.AuthError) as e:
        registryauth.auth_json(data, REG)
    assert message in str(e.value) and "\n" not in str(e.value)
    for value in data.values():
        if len(value) > 3:
            assert value.decode(errors="replace") not in str(e.value)


def test_too_many_hosts_are_refused():
    config = {"auths": {f"r{i}.io": {"username": "u", "password": "p"}
                        for i in range(registryauth.MAX_HOSTS + 1)}}
    with pytest.raises(registryauth.AuthError, match="at most"):
        registryauth.auth_json({".dockerconfigjson": json.dumps(config).encode()}, REG)


def test_the_private_file_is_0600_in_a_0700_directory_and_goes_away():
    with registryauth.private_file(b'{"auths": {}}') as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        with open(path, "rb") as f:
            assert f.read() == b'{"auths": {}}'
    assert not os.path.exists(os.path.dirname(path))


def test_fingerprints_tell_credentials_apart():
    assert registryauth.fingerprint(None) == ""
    assert registryauth.fingerprint(b"a") != registryauth.fingerprint(b"b")


def workload(secret: str = "reg-creds", image: str = f"{REG}/team/app:1") -> types_pb2.Workload:
    w = types_pb2.Workload()
    w.metadata.namespace, w.metadata.name = "default", "web"
    w.spec.image, w.spec.image_pull_secret, w.spec.replicas = image, secret, 1
    return w


@pytest.mark.parametrize("secrets, problem", [
    ({"reg-creds": {"username", "password"}}, None),
    ({"reg-creds": {".dockerconfigjson"}}, None),
    ({}, 'spec.imagePullSecret: secret "reg-creds" does not exist'),
    ({"reg-creds": {"username"}}, 'spec.imagePullSecret: secret "reg-creds" needs keys username'
                                  " and password, or .dockerconfigjson; it has username"),
])
def test_the_secret_is_checked_as_a_reference_at_apply(secrets, problem):
    found = validation.reference_problem(workload(), {}, secrets)
    assert (str(found) if found else None) == problem
    # A caller that cannot see Secrets (the CLI) leaves it to the server.
    assert validation.reference_problem(workload(), {}, None) is None


def test_the_secret_is_a_reference_but_a_new_password_rolls_nothing():
    w = workload()
    assert validation.references(w.spec)[1] == {"reg-creds"}
    assert validation.references(w.spec, pull_secret=False)[1] == set()

    class Snap:
        configs: dict = {}
        secrets = {("default", "reg-creds"): b"sealed-version-1"}
    before = workload_hash(w, Snap())  # type: ignore[arg-type]
    Snap.secrets = {("default", "reg-creds"): b"sealed-version-2"}
    assert workload_hash(w, Snap()) == before  # type: ignore[arg-type]


class RecordingResolver(imagepin.Resolver):
    def __init__(self) -> None:
        super().__init__(imagepin.PinConfig())
        self.asked: list[tuple[str, bytes | None]] = []

    def resolve(self, ref: str, auth: bytes | None = None) -> str:
        self.asked.append((ref, auth))
        return "sha256:" + "ab" * 32


def test_pinning_uses_the_secret_and_asks_once_per_credentials():
    secret = types_pb2.Secret(data={"username": b"u", "password": b"p"})
    resolver = RecordingResolver()
    a, b, c = workload(), workload(), workload(secret="")
    b.metadata.name, c.metadata.name = "web2", "web3"
    out = imagepin.pins(resolver, [a, b, c], {},
                        lambda ns, name: secret if name == "reg-creds" else None)
    assert set(out.values()) == {"sha256:" + "ab" * 32}
    assert len(resolver.asked) == 2                     # with the secret, and without
    auths = [auth for _, auth in resolver.asked]
    assert None in auths
    assert decoded(next(x for x in auths if x is not None)) == {REG: "u:p"}


def test_a_secret_that_cannot_be_used_leaves_the_workload_unpinned():
    resolver = RecordingResolver()
    out = imagepin.pins(resolver, [workload()], {}, lambda ns, name: None)
    assert out == {("default", "web"): ""} and resolver.asked == []


def test_the_resolver_hands_the_secret_by_a_private_path():
    resolver = imagepin.Resolver(imagepin.PinConfig(auth_file="/etc/node-auth.json"))
    argv = resolver.command(f"{REG}/app:1", "/tmp/certs", "/tmp/x/auth.json")
    assert argv[argv.index("--authfile") + 1] == "/tmp/x/auth.json"
    assert "/etc/node-auth.json" not in argv
    default = resolver.command(f"{REG}/app:1", "/tmp/certs")
    assert default[default.index("--authfile") + 1] == "/etc/node-auth.json"


def test_a_pull_secret_in_use_cannot_go_but_is_not_said_to_roll():
    from mctl.scheduler.objects import users_of

    class Snap:
        workloads = {("default", "web"): workload()}
    assert users_of(Snap(), "secret", "default", "reg-creds") == ["web"]  # type: ignore[arg-type]
    assert users_of(Snap(), "secret", "default", "reg-creds",  # type: ignore[arg-type]
                    rolling=True) == []
