"""Planning smolvm machine changes (module_utils/_smolmachine.py) and the client's
error handling (module_utils/_smolvm.py), with smolvm faked at the CLI boundary."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    SMOLVM_NO_NAMES,
    build_policy,
    render_smolvm,
    smolvm_deny_cidrs,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._smolmachine import (
    MachineSpec,
    PlanError,
    actual_spec,
    create_args,
    desired_spec,
    egress_matches,
    plan,
    update_args,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._smolvm import (
    SmolvmClient,
    SmolvmError,
    parse_error,
)

POLICY = build_policy(["api.example.com"], ["cdn.example"], ["203.0.113.0/24"])


def want(policy=POLICY, **overrides: object) -> MachineSpec:  # type: ignore[no-untyped-def]
    params: dict[str, object] = {
        "image": "alpine:3.20",
        "command": ["sleep", "infinity"],
        "cpus": 2,
        "memory_mib": 512,
        "storage_gib": None,
        "workdir": "/work",
        "env": {"A": "1"},
        "mounts": None,
        "ports": None,
        "labels": None,
        "smolvm_allow": render_smolvm(policy),
        "policy_hash": policy.digest,
    }
    params.update(overrides)
    return desired_spec(**params)  # type: ignore[arg-type]


def test_desired_uses_exact_patterns_and_labels() -> None:
    spec = want()
    assert spec.allow_hosts == ("*.cdn.example", "=api.example.com")
    assert spec.allow_cidrs == ("203.0.113.0/24",)
    assert spec.network is True
    labels = dict(spec.labels)
    assert labels["botbottle.managed-by"] == "bot-bottle"
    assert labels["botbottle.policy"] == POLICY.digest


def test_no_routes_means_no_network() -> None:
    spec = want(build_policy())
    assert spec.network is False and spec.allow_hosts == () and spec.allow_cidrs == ()


def test_image_normalisation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    assert want(image=str(rootfs)).image == "local-dir:" + str(rootfs.resolve())
    archive = tmp_path / "img.tar"
    archive.write_bytes(b"data")
    assert want(image=str(archive)).image == (
        "local:3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7"
    )
    assert want(image="alpine").image == "alpine"
    assert want(image=str(archive)).image_source == str(archive)


def test_create_plan_and_args() -> None:
    spec = want()
    todo = plan(None, None, spec, "present")
    assert todo.actions == ["create"]
    args = create_args("bottle-x", spec)
    assert args[:2] == ["--name", "bottle-x"]
    at = args.index("api.example.com")
    assert args[at - 1 : at + 1] == ["--allow-host-pattern", "api.example.com"]
    assert "--allow-host" not in args
    assert "=api.example.com" not in args  # the CLI takes the bare name with the pattern flag
    assert args[-3:] == ["--", "sleep", "infinity"]
    assert plan(None, None, spec, "started").actions == ["create", "start"]


def test_refuses_bare_allow_list_entries() -> None:
    spec = replace(want(), allow_hosts=("api.example.com",))
    with pytest.raises(ValueError, match="bare allow-list entry"):
        create_args("x", spec)


def test_no_change_when_equal() -> None:
    spec = want()
    assert plan(spec, "created", spec, "present").actions == []
    assert plan(spec, "running", spec, "started").actions == []
    assert plan(spec, "stopped", spec, "stopped").actions == []


def test_policy_change_is_an_update_in_place() -> None:
    old = want()
    new = want(build_policy(["api2.example.com"]))
    todo = plan(old, "created", new, "present")
    assert todo.actions == ["update"]
    assert set(todo.changed_fields) == {"allow_hosts", "allow_cidrs"}
    assert todo.update == ["--reset-allow-list", "--allow-host-pattern", "api2.example.com"]


def test_allow_lists_change_live_but_resources_need_a_stop() -> None:
    old = want()
    assert plan(old, "running", want(build_policy(["b.example"])), "started").actions == ["update"]
    assert plan(old, "running", want(cpus=4), "started").actions == ["stop", "update", "start"]


def test_removing_every_route_turns_networking_off() -> None:
    todo = plan(want(), "created", want(build_policy()), "present")
    assert todo.update == ["--no-net"]


def test_immutable_drift_needs_recreate() -> None:
    old = want()
    with pytest.raises(PlanError, match=r"image, command.*recreate=true.*destroys its disk"):
        plan(old, "created", want(image="debian", command=["true"]), "present")
    todo = plan(old, "running", want(image="debian"), "started", recreate=True)
    assert todo.actions == ["delete", "create", "start"]


def test_policy_label_alone_is_not_drift() -> None:
    old = want()
    relabelled = replace(
        old,
        labels=tuple((k, "sha256:other" if k == "botbottle.policy" else v) for k, v in old.labels),
    )
    assert plan(relabelled, "created", old, "present").actions == []
    extra = replace(old, labels=(*old.labels, ("team", "x")))
    with pytest.raises(PlanError, match="labels"):
        plan(old, "created", extra, "present")


def test_unset_resources_are_not_compared() -> None:
    old = want()
    assert plan(old, "created", want(cpus=None, memory_mib=None), "present").actions == []


def test_absent() -> None:
    assert plan(want(), "running", None, "absent").actions == ["delete"]
    assert plan(None, None, None, "absent").actions == []


def test_update_args_env_mounts_ports() -> None:
    old = replace(
        want(), env=(("A", "1"), ("B", "2")), mounts=(("/a", "/x", False),), ports=((8080, 80),)
    )
    new = replace(
        want(), env=(("A", "9"), ("C", "3")), mounts=(("/b", "/y", True),), ports=((9090, 90),)
    )
    args = update_args(old, new, ["env", "mounts", "ports"])
    assert args == [
        "--remove-env",
        "B",
        "--env",
        "A=9",
        "--env",
        "C=3",
        "--remove-volume",
        "/a:/x",
        "--volume",
        "/b:/y:ro",
        "--remove-port",
        "8080:80",
        "--port",
        "9090:90",
    ]


def test_actual_spec_from_listing_and_record() -> None:
    listing = {
        "name": "m",
        "image": "local-dir:/r",
        "cmd": ["sleep", "infinity"],
        "cpus": 2,
        "memory_mib": 512,
        "network": True,
        "labels": {"k": "v"},
        "allowed_hosts": ["=API.example.com."],
        "allowed_cidrs": ["10.1.2.3/8"],
    }
    record = {
        "env": [["A", "1"]],
        "workdir": "/w",
        "mounts": [["/s", "/t", True]],
        "ports": [[1, 2]],
    }
    spec = actual_spec(listing, record)
    assert spec.allow_hosts == ("=api.example.com",)
    assert spec.allow_cidrs == ("10.0.0.0/8",)
    assert spec.env == (("A", "1"),) and spec.mounts == (("/s", "/t", True),)
    assert spec.to_dict()["env"] == {"A": "********"}


def test_egress_matches_fails_closed() -> None:
    spec = want()
    assert egress_matches(spec, spec)
    assert not egress_matches(replace(spec, allow_hosts=("=api.example.com",)), spec)
    # networking with empty lists is open egress: never a match, even if "wanted"
    opened = replace(spec, allow_hosts=(), allow_cidrs=(), network=True)
    assert not egress_matches(opened, replace(opened))


# --------------------------------------------------------------------------- deny rules

# What smolvm 1.32.2 stores for `--deny-cidr` (tests/integration/test_smolvm_host_reach.py
# creates real records): one {"cidr", "action": "deny"} per rule, IPv4-mapped networks
# written as ::ffff:0.0.0.0/96.
STORED_DENY = [
    {"cidr": "::ffff:0.0.0.0/96" if c == "::ffff:0:0/96" else c, "action": "deny"}
    for c in smolvm_deny_cidrs()
]


def _stored(spec: MachineSpec, egress_rules: object) -> MachineSpec:
    listing = {
        "image": spec.image,
        "cmd": list(spec.command),
        "cpus": spec.cpus,
        "memory_mib": spec.memory_mib,
        "network": spec.network,
        "labels": dict(spec.labels),
        "allowed_hosts": list(spec.allow_hosts),
        "allowed_cidrs": list(spec.allow_cidrs),
    }
    record: dict[str, Any] = {"env": [list(e) for e in spec.env], "workdir": spec.workdir}
    if egress_rules is not None:
        record["egress_rules"] = egress_rules
    return actual_spec(listing, record)


def test_create_passes_the_deny_rules_and_update_never_does() -> None:
    spec = want()
    args = create_args("bottle-x", spec)
    denied = [args[i + 1] for i, a in enumerate(args) if a == "--deny-cidr"]
    assert denied == smolvm_deny_cidrs()
    assert args.index("--deny-cidr") < args.index("--")  # before the workload command
    todo = plan(spec, "created", want(build_policy(["b.example"])), "present")
    assert todo.actions == ["update"] and "--deny-cidr" not in todo.update


def test_a_record_with_the_deny_rules_is_no_change() -> None:
    spec = want()
    stored = _stored(spec, STORED_DENY)
    assert stored.deny_cidrs == spec.deny_cidrs
    assert plan(stored, "running", spec, "started").actions == []
    assert egress_matches(stored, spec)


@pytest.mark.parametrize(
    "egress_rules",
    [None, [], STORED_DENY[:1], [{"cidr": "100.96.0.0/16", "action": "allow"}]],
    ids=["no-key", "empty", "only-some", "not-deny"],
)
def test_a_machine_without_its_deny_rules_is_created_again(egress_rules: object) -> None:
    """smolvm takes deny rules only at create: a machine made without them (older
    bot-bottle, or `update --no-net` and back) is replaced, even without recreate."""
    spec = want()
    stored = _stored(spec, egress_rules)
    assert stored.deny_cidrs != spec.deny_cidrs
    todo = plan(stored, "running", spec, "started")
    assert todo.actions == ["delete", "create", "start"]
    assert todo.changed_fields[0] == "deny_cidrs"
    assert plan(stored, "created", spec, "present").actions == ["delete", "create"]
    assert not egress_matches(stored, spec)  # the read-back fails closed too


def test_a_machine_without_network_needs_no_deny_rules() -> None:
    spec = want(build_policy())
    assert spec.deny_cidrs == () and spec.network is False
    stored = _stored(spec, None)
    assert plan(stored, "created", spec, "present").actions == []
    assert egress_matches(stored, spec)
    assert "--deny-cidr" not in create_args("bottle-x", spec)  # it would turn the network on
    # turning the network off is an in-place update (it drops smolvm's deny rules) ...
    assert plan(_stored(want(), STORED_DENY), "created", spec, "present").update == ["--no-net"]
    # ... and the first route after that is a new machine
    assert plan(stored, "created", want(), "present").actions == ["delete", "create"]


def test_a_cidr_only_bottle_gets_the_no_names_pattern() -> None:
    spec = want(build_policy(cidrs=["203.0.113.0/24"]))
    assert spec.allow_hosts == ("=" + SMOLVM_NO_NAMES,)
    args = create_args("bottle-x", spec)
    assert args[args.index(SMOLVM_NO_NAMES) - 1] == "--allow-host-pattern"


# --------------------------------------------------------------------------- client


class FakeCli:
    def __init__(self, replies: Mapping[str, tuple[int, str, str]]) -> None:
        self.replies = replies
        self.calls: list[list[str]] = []
        self.envs: list[Mapping[str, str]] = []

    def __call__(self, argv: Sequence[str], env: Mapping[str, str]) -> tuple[int, str, str]:
        self.calls.append(list(argv))
        self.envs.append(env)
        return self.replies.get(argv[2], (0, "", ""))


def test_client_removes_cloud_credentials_and_sets_data_home(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fake = FakeCli({"ls": (0, json.dumps([{"name": "a"}]), "")})
    client = SmolvmClient(
        "/bin/smolvm",
        data_home=str(tmp_path),
        runner=fake,
        environ={"SMOL_CLOUD_TOKEN": "tok", "PATH": "/bin"},
    )
    assert client.get("a") == {"name": "a"}
    assert client.get("b") is None
    assert "SMOL_CLOUD_TOKEN" not in fake.envs[0]
    assert fake.envs[0]["XDG_DATA_HOME"] == str(tmp_path)
    assert fake.calls[0] == ["/bin/smolvm", "machine", "ls", "--error-format", "json", "--json"]
    assert client.record("a") is None  # no database yet


@pytest.mark.parametrize(
    ("stderr", "rc", "code", "hint"),
    [
        (
            '{"error":{"code":"NOT_FOUND","message":"vm not found: x"}}',
            1,
            "NOT_FOUND",
            "does not exist",
        ),
        (
            '{"error":{"code":"CONFIG_ERROR","message":"create machine: machine \'t\' already '
            'exists or is being created"}}',
            1,
            "CONFLICT",
            "already exists",
        ),
        (
            '{"error":{"code":"KVM_UNAVAILABLE","message":"no kvm"}}',
            1,
            "KVM_UNAVAILABLE",
            "kvm group",
        ),
        (
            "error: invalid value 'bogus' for '--allow-cidr <CIDR>'\n\nFor more information",
            2,
            "CONFIG_ERROR",
            "rejected the configuration",
        ),
        ("something broke", 1, "SMOLVM_ERROR", "boot microVMs"),
    ],
)
def test_errors_map_to_codes_and_hints(stderr: str, rc: int, code: str, hint: str) -> None:
    error = parse_error(rc, "note: no packed assets found\n" + stderr, "create")
    assert error.code == code
    assert hint in error.describe()
    assert "no packed assets" not in error.describe()


def test_client_raises_with_the_operation() -> None:
    fake = FakeCli({"start": (1, "", '{"error":{"code":"SMOLVM_ERROR","message":"boom"}}')})
    client = SmolvmClient("/bin/smolvm", runner=fake, environ={})
    with pytest.raises(SmolvmError) as info:
        client.start("m")
    assert info.value.describe().startswith("smolvm start: SMOLVM_ERROR: boom")
