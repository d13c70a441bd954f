"""The Docker bottle's pure plan: every state, every kind of drift, and fail-closed ordering."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from ansible_collections.botbottle.bottle.plugins.module_utils._docker_bottle import (
    SEAL,
    ContainerSeen,
    PlanError,
    Seen,
    Want,
    agent_argv,
    blocked_destinations,
    file_digest,
    hardening,
    log_files,
    parse_rules_dump,
    plan,
    want,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._egress import PROXY_ENV_NAMES
from ansible_collections.botbottle.bottle.plugins.module_utils._policy import (
    build_policy,
    compile_policy,
)

POLICY = build_policy(["api.example.com"], ["cdn.example"])
CA = "ab:cd"  # the bottle CA's fingerprint
AGENT = {"image": "agent:1", "image_id": "sha256:aa", "entrypoint": [], "cmd": ["sleep", "inf"]}


def wanted(state: str = "started", **changes: object) -> Want:
    args: dict[str, object] = {
        "name": "demo",
        "state": state,
        "policy": POLICY,
        "subnet": "172.30.5.0/28",
        "upstreams": ["192.0.2.53"],
        "egress_network": "egress",
        "netutils_image_id": "sha256:nn",
        "guard_binary": "/var/lib/bb/.tools/busybox-nn",
        "state_dir": "/var/lib/bb",
        "agent": AGENT,
        "env": {"TOKEN": "s3cret"},
    }
    args.update(changes)
    return want(**args)  # type: ignore[arg-type]


def running(
    spec: str, netns: str = "net:[1]", env: tuple[tuple[str, str], ...] = ()
) -> ContainerSeen:
    return ContainerSeen(status="running", spec=spec, pid=10, netns=netns, env=env)


def converged(w: Want | None = None) -> Seen:
    """What a host holds after a successful run for ``w``."""
    w = w or wanted()
    return Seen(
        network_subnet=w.subnet,
        resolver=running(w.resolver_spec, "net:[7]"),
        holder=running(w.holder_spec),
        agent=replace(running(w.agent_spec, env=w.agent_env), hardening=w.agent_hardening, ca=CA),
        proxy=replace(running(w.proxy_spec, "net:[8]"), ca=CA),
        proxy_secrets=hashlib.sha256(w.proxy_secrets).hexdigest(),
        ca=CA,
        rules_stamp=w.stamp,
        sealed=True,
        files={k: file_digest(v) for k, v in w.files.items()},
    )


def test_a_new_bottle_is_built_in_order_and_the_agent_starts_last() -> None:
    todo = plan(Seen(), wanted())
    assert todo.actions == (
        "write_files",
        "make_ca",
        "create_network",
        "create_resolver",
        "wait_resolver",
        "create_holder",
        "check_rules",
        "create_proxy",
        "wait_proxy",
        "deliver_secrets",
        "create_agent",
        "start_agent",
    )
    assert todo.after["agent"] == "running" and todo.after["sealed"] is True
    assert todo.after["proxy"] == "running" and todo.after["ca"] == "new"
    assert todo.after["agent_env"] == sorted(["TOKEN", *PROXY_ENV_NAMES])
    assert "s3cret" not in repr(todo)  # env values never reach the plan's output


def test_a_converged_bottle_needs_nothing() -> None:
    todo = plan(converged(), wanted())
    assert todo.actions == () and not todo.changed and todo.before == todo.after


@pytest.mark.parametrize(
    ("state", "agent_state", "actions", "after"),
    [
        ("started", "exited", ("start_agent",), "running"),
        ("stopped", "running", ("stop_agent",), "exited"),
        ("stopped", "exited", (), "exited"),
        ("stopped", "created", (), "created"),
        ("present", "running", (), "running"),
        ("present", "exited", (), "exited"),
    ],
)
def test_agent_run_state_transitions(
    state: str, agent_state: str, actions: tuple[str, ...], after: str
) -> None:
    w = wanted(state)
    seen = converged(w)
    assert seen.agent is not None
    seen = replace(seen, agent=replace(seen.agent, status=agent_state))
    todo = plan(seen, w)
    assert todo.actions == actions
    assert todo.after["agent"] == after


@pytest.mark.parametrize(
    ("state", "starts"), [("stopped", False), ("present", False), ("started", True)]
)
def test_a_new_agent_is_started_only_when_started(state: str, starts: bool) -> None:
    todo = plan(Seen(), wanted(state))
    assert ("start_agent" in todo.actions) is starts
    assert todo.actions[-1 if not starts else -2] == "create_agent"


def test_absent_removes_everything_agent_first() -> None:
    todo = plan(converged(), wanted("absent"))
    assert todo.actions == (
        "remove_agent",
        "remove_proxy",
        "remove_holder",
        "remove_resolver",
        "remove_network",
        "remove_files",
    )
    assert plan(Seen(), wanted("absent")).actions == ()
    # a CA left behind alone is removed too
    assert plan(Seen(ca=CA), wanted("absent")).actions == ("remove_files",)


def test_a_changed_allowlist_reloads_the_resolver_and_rules_and_keeps_the_agent() -> None:
    old = wanted()
    new = wanted(policy=build_policy(["api.example.com", "new.example.com"], ["cdn.example"]))
    todo = plan(converged(old), new)
    assert todo.actions == (
        "write_files",
        "restart_resolver",
        "wait_resolver",
        "load_rules",
        "check_rules",
        "remove_proxy",
        "create_proxy",
        "wait_proxy",
        "deliver_secrets",
    )
    assert "agent" not in " ".join(todo.actions)
    assert "file:egress.json" in todo.changed_fields and "proxy" in todo.changed_fields
    assert "file:dnsmasq.conf" in todo.changed_fields and "rules" in todo.changed_fields


def test_flushed_rules_are_reloaded() -> None:
    seen = replace(converged(), rules_stamp="")
    assert plan(seen, wanted()).actions == ("load_rules", "check_rules")
    unsealed = replace(converged(), sealed=False)
    assert plan(unsealed, wanted()).actions == ("load_rules", "check_rules")


def test_a_restarted_holder_moves_the_agent_into_the_new_namespace() -> None:
    w = wanted()
    seen = converged(w)
    assert seen.holder is not None
    seen = replace(seen, holder=replace(seen.holder, netns="net:[2]"))
    todo = plan(seen, w)
    assert todo.actions == ("restart_agent",)
    assert todo.changed_fields == ("agent_namespace",)


def test_a_stopped_holder_is_started_with_the_agent_stopped_first() -> None:
    w = wanted()
    seen = converged(w)
    assert seen.holder is not None
    seen = replace(seen, holder=replace(seen.holder, status="exited", netns=""), rules_stamp="")
    todo = plan(seen, w)
    assert todo.actions == ("stop_agent", "start_holder", "check_rules", "start_agent")


def test_a_changed_holder_is_recreated_and_the_agent_rejoins_after_the_rules() -> None:
    seen = converged()
    assert seen.holder is not None
    seen = replace(seen, holder=replace(seen.holder, spec="old"))
    todo = plan(seen, wanted())
    assert todo.actions == (
        "stop_agent",
        "remove_holder",
        "create_holder",
        "check_rules",
        "start_agent",
    )


def test_resolver_drift() -> None:
    seen = converged()
    assert seen.resolver is not None
    stopped = replace(seen, resolver=replace(seen.resolver, status="exited"))
    assert plan(stopped, wanted()).actions == ("start_resolver", "wait_resolver")
    other = replace(seen, resolver=replace(seen.resolver, spec="old"))
    assert plan(other, wanted()).actions == (
        "remove_resolver",
        "create_resolver",
        "wait_resolver",
    )
    gone = replace(seen, resolver=None)
    assert plan(gone, wanted()).actions == ("create_resolver", "wait_resolver")


def test_a_hand_edited_resolver_config_is_rewritten_and_reloaded() -> None:
    seen = replace(converged(), files={**converged().files, "dnsmasq.conf": "tampered"})
    todo = plan(seen, wanted())
    assert todo.actions == ("write_files", "restart_resolver", "wait_resolver")


def test_agent_drift_recreates_it() -> None:
    w = wanted()
    seen = converged(w)
    assert seen.agent is not None
    labels = replace(seen, agent=replace(seen.agent, spec="other-labels-or-image"))
    assert plan(labels, w).actions == ("remove_agent", "create_agent", "start_agent")
    env = replace(seen, agent=replace(seen.agent, env=(("TOKEN", "previous-secret-value"),)))
    todo = plan(env, w)
    assert todo.actions == ("remove_agent", "create_agent", "start_agent")
    assert todo.changed_fields == ("agent_env",)
    assert "previous-secret-value" not in repr(todo) and "s3cret" not in repr(todo)


def test_a_new_subnet_rebuilds_everything() -> None:
    seen = replace(converged(), network_subnet="172.30.9.0/28")
    todo = plan(seen, wanted())
    assert todo.actions[:5] == (
        "remove_agent",
        "remove_proxy",
        "remove_holder",
        "remove_resolver",
        "remove_network",
    )
    assert todo.actions[-2:] == ("create_agent", "start_agent")


def test_the_agent_never_starts_before_the_rules_are_checked() -> None:
    """Whatever is there, start/restart of the agent comes after check_rules when the
    namespace is new or the rules are reloaded."""
    w = wanted()
    base = converged(w)
    assert base.holder is not None and base.agent is not None
    cases = [
        Seen(),
        replace(base, rules_stamp=""),
        replace(base, holder=None),
        replace(base, holder=replace(base.holder, status="exited")),
        replace(base, agent=replace(base.agent, status="exited"), rules_stamp=""),
        replace(base, network_subnet=None, holder=None, resolver=None),
    ]
    for seen in cases:
        actions = list(plan(seen, w).actions)
        for start in ("start_agent", "restart_agent"):
            if start in actions and "check_rules" in actions:
                assert actions.index("check_rules") < actions.index(start), actions
        new_namespace = "check_rules" in actions and "load_rules" not in actions
        if seen.agent is not None and seen.agent.running and new_namespace:
            # a new namespace: the running agent is stopped (or removed) before anything else
            assert actions[0] in ("stop_agent", "remove_agent"), actions


def test_parse_rules_dump() -> None:
    w = wanted()
    marker = f'-A OUTPUT -m comment --comment "{w.stamp}"'
    dump = f"*filter\n{marker}\nCOMMIT\n### ipv6\n*filter\n{marker}\nCOMMIT\n### seal\n{SEAL}\n"
    assert parse_rules_dump(dump, w.stamp) == (w.stamp, True)
    only_v4 = f"*filter\n{marker}\n### ipv6\n*filter\nCOMMIT\n### seal\n\n"
    assert parse_rules_dump(only_v4, w.stamp) == ("", False)
    old = wanted(policy=build_policy(["old.example"]))
    assert parse_rules_dump(dump, old.stamp) == (w.stamp, True)  # reports what is loaded
    assert parse_rules_dump("", w.stamp) == ("", False)


def test_agent_argv_puts_the_guard_in_front() -> None:
    entrypoint, cmd = agent_argv(["/entry"], ["default"], None)
    assert entrypoint[0] == "/.bot-bottle/busybox" and cmd == ["/entry", "default"]
    assert agent_argv(["/entry"], ["default"], ["mine"])[1] == ["/entry", "mine"]
    assert agent_argv(None, ["sh"], None)[1] == ["sh"]
    with pytest.raises(PlanError, match=r"runtime\.command"):
        agent_argv(None, None, None)


def test_want_refuses_unknown_states() -> None:
    with pytest.raises(PlanError):
        wanted("running")


def test_files_hold_the_compiler_output() -> None:
    w = wanted(
        policy=build_policy(["a.example"], cidrs=["10.0.0.0/8"]),
        host_addresses=["10.1.2.9", "192.0.2.9"],
    )
    assert "server=/a.example/192.0.2.53" in w.files["dnsmasq.conf"]
    assert f"listen-address={w.addresses['resolver']}" in w.files["dnsmasq.conf"]
    assert f"nameserver {w.addresses['resolver']}" in w.files["resolv.conf"]
    rules = w.files["rules.ipv4"].splitlines()
    assert rules.index(
        "-A OUTPUT -d 10.1.2.9/32 -j REJECT --reject-with icmp-port-unreachable"
    ) < rules.index("-A OUTPUT -d 10.0.0.0/8 -j ACCEPT")
    # a host address no route covers needs no rule: the default deny refuses it
    assert "192.0.2.9" not in w.files["rules.ipv4"]


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("cap_add", ["NET_ADMIN"]),
        ("privileged", True),
        ("security_opt", []),
        ("network_mode", "host"),
        ("host_namespaces", ["PidMode"]),
        ("devices", 1),
        ("binds", ["/var/run/docker.sock:/s"]),
        ("init", False),
    ],
)
def test_an_agent_remade_by_hand_with_the_labels_is_recreated(change: str, value: object) -> None:
    """The labels say it is the bottle's agent; what confines it says otherwise."""
    w = wanted()
    seen = converged(w)
    assert seen.agent is not None
    tampered = replace(
        seen, agent=replace(seen.agent, hardening={**w.agent_hardening, change: value})
    )
    todo = plan(tampered, w)
    assert todo.actions == ("remove_agent", "create_agent", "start_agent")
    assert todo.changed_fields == ("agent_hardening",)


def test_hardening_reads_what_docker_reports() -> None:
    w = wanted()
    reported = {
        "CapAdd": None,
        "CapDrop": ["ALL"],
        "Privileged": False,
        "SecurityOpt": ["no-new-privileges:true"],
        "NetworkMode": "container:0a1b2c",
        "CgroupnsMode": "host",
        "PidMode": "",
        "IpcMode": "private",
        "Devices": [],
        "Binds": None,
        "Init": True,
        "Mounts": [
            {
                "Type": "bind",
                "Source": "/var/lib/bb/demo/resolv.conf",
                "Target": "/etc/resolv.conf",
                "ReadOnly": True,
            },
            {
                "Type": "bind",
                "Source": "/var/lib/bb/.tools/busybox-nn",
                "Target": "/.bot-bottle/busybox",
                "ReadOnly": True,
            },
            *(
                {
                    "Type": "bind",
                    "Source": "/var/lib/bb/demo/ca/mitmproxy-ca-cert.pem",
                    "Target": target,
                    "ReadOnly": True,
                }
                for target in ("/etc/bot-bottle/ca.pem", "/etc/ssl/certs/ca-certificates.crt")
            ),
        ],
    }
    assert hardening(reported, {"0a1b2c": "bottle-demo-net"}) == w.agent_hardening
    assert hardening(reported)["network_mode"] == "container:0a1b2c"  # another container's
    assert hardening({**reported, "CapAdd": ["CAP_NET_ADMIN"]})["cap_add"] == ["NET_ADMIN"]


def test_other_bottles_coming_and_going_do_not_change_a_bottles_rules() -> None:
    """The host's addresses on other bottle networks are inside the pool, which is
    rejected as a whole: a new bottle's gateway does not rewrite this bottle's rules."""
    cidrs = build_policy(["a.example"], cidrs=["0.0.0.0/0"])
    pool = "172.30.0.0/16"
    before = wanted(policy=cidrs, host_addresses=["192.0.2.9", "172.30.0.1"], subnet_pool=pool)
    after = wanted(
        policy=cidrs,
        host_addresses=["192.0.2.9", "172.30.0.1", "172.30.7.17"],
        subnet_pool=pool,
    )
    assert before.files == after.files
    assert plan(converged(before), after).actions == ()
    rules = after.files["rules.ipv4"].splitlines()
    accept = rules.index("-A OUTPUT -d 0.0.0.0/0 -j ACCEPT")
    for net in ("172.30.0.0/16", "192.0.2.9/32"):
        assert (
            rules.index(f"-A OUTPUT -d {net} -j REJECT --reject-with icmp-port-unreachable")
            < accept
        )
    host = ["10.0.0.5", "172.30.1.1", "fe80::1", "127.0.0.1", "192.0.2.7"]
    assert blocked_destinations(host, "172.30.0.0/16", ["10.0.0.0/8", "::/0"]) == [
        "172.30.0.0/16",
        "10.0.0.5",
    ]
    assert blocked_destinations(host, "172.30.0.0/16") == ["172.30.0.0/16"]


def test_containers_and_networks_coming_and_going_do_not_change_a_bottle() -> None:
    """Each container adds a link-local address to the host (its veth) and each network a
    gateway address: a bottle's rules and proxy stay the same unless a route covers one."""
    for policy in (POLICY, build_policy(["a.example"], cidrs=["203.0.113.0/24", "::/0"])):
        before = wanted(policy=policy, host_addresses=["192.0.2.9", "fe80::1"])
        after = wanted(
            policy=policy,
            host_addresses=["192.0.2.9", "fe80::1", "fe80::42:ff:fe00:2", "172.18.0.1"],
        )
        assert before.files == after.files and before.proxy_spec == after.proxy_spec


# --------------------------------------------------------------------------- the egress proxy


def test_the_agent_is_sent_through_its_proxy_and_trusts_only_its_ca() -> None:
    w = wanted()
    env = dict(w.agent_env)
    proxy = f"http://{w.addresses['proxy']}:8080"
    assert w.addresses["proxy"] == "172.30.5.4"  # gateway .1, resolver .2, holder .3, proxy .4
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        assert env[name] == env[name.lower()] == proxy
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1"
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE"):
        assert env[name] == "/etc/bot-bottle/ca.pem"
    assert env["TOKEN"] == "s3cret"
    mounts = {target: source for source, target, _ in w.agent_hardening["mounts"]}
    assert mounts["/etc/bot-bottle/ca.pem"] == "/var/lib/bb/demo/ca/mitmproxy-ca-cert.pem"
    assert mounts["/etc/ssl/certs/ca-certificates.crt"] == mounts["/etc/bot-bottle/ca.pem"]
    assert all("mitmproxy-ca.pem" not in source for source in mounts.values())  # never the key


@pytest.mark.parametrize(
    "name", ["HTTPS_PROXY", "no_proxy", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"]
)
def test_the_manifest_env_may_not_set_the_proxy_variables(name: str) -> None:
    with pytest.raises(PlanError, match=f"env sets {name}, which bot-bottle sets itself"):
        wanted(env={name: "http://elsewhere:3128"})


def test_the_rules_accept_the_proxy_port_before_anything_is_rejected() -> None:
    w = wanted(policy=build_policy(["a.example"], cidrs=["0.0.0.0/0"]), host_addresses=["10.9.9.9"])
    lines = w.files["rules.ipv4"].splitlines()
    accept = "-A OUTPUT -d 172.30.5.4/32 -p tcp -m tcp --dport 8080 -j ACCEPT"
    assert lines.count(accept) == 1
    first_reject = next(i for i, line in enumerate(lines) if "-d 172.30.5.1/32 -j REJECT" in line)
    assert lines.index(accept) < first_reject
    # the proxy's other ports are not opened
    assert "--dport 8080" not in w.files["rules.ipv6"]
    assert w.stamp.endswith("via-172.30.5.4:8080")


def test_the_proxy_configuration_refuses_the_gateway_and_the_hosts_public_addresses() -> None:
    host = ["172.17.0.1", "10.0.0.5", "198.51.100.7", "11.22.33.44", "172.30.9.1"]
    w = wanted(host_addresses=host, subnet_pool="172.30.0.0/16")
    config = json.loads(w.files["egress.json"])
    # private host addresses are refused by the proxy anyway (no cidr route covers them);
    # documentation ranges are not global; the public one is listed
    assert config["refused_networks"] == ["172.30.5.1/32", "172.30.0.0/16", "11.22.33.44/32"]
    assert config["resolver"] == "172.30.5.2#53"
    with_cidrs = wanted(
        host_addresses=host,
        subnet_pool="172.30.0.0/16",
        policy=build_policy(["a.example"], cidrs=["10.0.0.0/8"]),
        private_networks=["172.16.0.0/12"],
    )
    refused = json.loads(with_cidrs.files["egress.json"])["refused_networks"]
    # covered by the cidr route, by a private network, public: refused; the pool once
    assert refused == [
        "172.30.5.1/32",
        "172.30.0.0/16",
        "10.0.0.5/32",
        "11.22.33.44/32",
        "172.17.0.1/32",
    ]


def test_a_new_host_network_does_not_change_the_proxy_without_cidr_routes() -> None:
    before = wanted(host_addresses=["172.17.0.1"], subnet_pool="172.30.0.0/16")
    after = wanted(host_addresses=["172.17.0.1", "172.18.0.1"], subnet_pool="172.30.0.0/16")
    assert before.proxy_spec == after.proxy_spec
    assert plan(converged(before), after).actions == ()


def test_a_stopped_proxy_is_started_and_nothing_else_moves() -> None:
    w = wanted()
    seen = converged(w)
    assert seen.proxy is not None
    todo = plan(replace(seen, proxy=replace(seen.proxy, status="exited")), w)
    assert todo.actions == ("start_proxy", "wait_proxy", "deliver_secrets")
    assert todo.changed_fields == ("proxy_state",)


def test_a_new_proxy_image_remakes_the_proxy_only() -> None:
    old = wanted()
    new = wanted(proxy_image_id="sha256:new")
    todo = plan(converged(old), new)
    assert todo.actions == ("remove_proxy", "create_proxy", "wait_proxy", "deliver_secrets")
    assert todo.changed_fields == ("proxy",)


def test_a_lost_ca_is_made_again_and_the_proxy_and_agent_are_remade() -> None:
    w = wanted()
    todo = plan(replace(converged(w), ca=""), w)
    assert todo.actions == (
        "make_ca",
        "remove_proxy",
        "create_proxy",
        "wait_proxy",
        "deliver_secrets",
        "remove_agent",
        "create_agent",
        "start_agent",
    )
    assert todo.before["ca"] == "absent" and todo.after["ca"] == "new"
    assert "agent_ca" in todo.changed_fields


def test_an_agent_made_with_another_ca_is_remade() -> None:
    w = wanted()
    seen = converged(w)
    assert seen.agent is not None
    todo = plan(replace(seen, agent=replace(seen.agent, ca="00:11")), w)
    assert todo.actions == ("remove_agent", "create_agent", "start_agent")
    assert todo.changed_fields == ("agent_ca",)


def test_the_trusted_ca_is_mounted_and_given_to_mitmproxy() -> None:
    plain = wanted()
    private = wanted(trusted_ca="/etc/demo/ca.pem", trusted_ca_digest="d1")
    assert "ssl_verify_upstream_trusted_ca" not in " ".join(plain.proxy_create["command"])
    assert (
        "ssl_verify_upstream_trusted_ca=/etc/bot-bottle/egress/upstream-ca.pem"
        in private.proxy_create["command"]
    )
    rotated = wanted(trusted_ca="/etc/demo/ca.pem", trusted_ca_digest="d2")
    assert len({plain.proxy_spec, private.proxy_spec, rotated.proxy_spec}) == 3


def test_the_proxys_runtime_secrets_are_handed_over_again_when_they_differ() -> None:
    old = wanted(credentials={"FORGE_TOKEN": "tok-1-abcdefgh"})
    new = wanted(credentials={"FORGE_TOKEN": "tok-2-abcdefgh"})
    assert old.proxy_spec == new.proxy_spec  # the proxy itself is not re-made
    todo = plan(converged(old), new)
    assert todo.actions == ("deliver_secrets",)
    assert todo.changed_fields == ("proxy_secrets",)
    assert "tok-" not in repr(todo) and "tok-" not in repr(converged(old))
    assert plan(replace(converged(new), proxy_secrets=""), new).actions == ("deliver_secrets",)
    assert plan(converged(new), new).actions == ()


def test_a_route_credential_that_was_not_passed_fails_the_plan() -> None:
    policy = compile_policy(
        {
            "egress": {
                "routes": [
                    {"host": "git.example", "auth": {"scheme": "token", "token_ref": "FORGE"}}
                ]
            }
        }
    )
    assert wanted(policy=policy, credentials={"FORGE": "tok-abcdefgh"}).proxy_secrets
    with pytest.raises(PlanError, match="credentials of routes with auth are missing: FORGE"):
        wanted(policy=policy)


def test_log_files_follow_the_state_directory() -> None:
    assert log_files("/srv/bb/", "demo") == (
        "/srv/bb/demo/log/queries.log",
        "/srv/bb/demo/log/egress/egress.jsonl",
    )
