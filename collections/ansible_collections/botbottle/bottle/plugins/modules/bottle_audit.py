#!/usr/bin/python
# Copyright: bot-bottle contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: collect and show a bottle's refused DNS queries and egress proxy log."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.botbottle.bottle.plugins.module_utils._audit import (
    Refusal,
    parse_smolvm_events,
    since_cutoff,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._audit_store import (
    Collected,
    Source,
    collect,
    dnsmasq_source,
    egress_source,
    paths,
    with_sources,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._bottle import object_name
from ansible_collections.botbottle.bottle.plugins.module_utils._docker_bottle import (
    STATE_DIR,
    log_files,
)
from ansible_collections.botbottle.bottle.plugins.module_utils._smolvm import (
    CLIENT_ARGUMENT_SPEC,
    SmolvmError,
    client_from_params,
)

DOCUMENTATION = r"""
module: bottle_audit
short_description: Collect a bottle's refused DNS queries and proxy log into its audit log
version_added: 0.2.0
author: bot-bottle contributors
description:
  - Reads the refusals of one bottle since the last collection and appends them to the
    bottle's audit log, C(<audit_dir>/<name>.jsonl), one JSON object per line with the
    keys C(time), C(bottle), C(name), C(type), C(verdict), C(source) and C(flags).
  - Docker example bottles are read from their resolver's query log (dnsmasq
    C(log-queries=extra)) and from their egress proxy's log (JSON lines, written at
    C(egress.log) 1 and 2); smolmachines bottles from C(smolvm machine egress-events --json).
  - C(source) says where an entry comes from - C(dnsmasq), C(smolvm) or C(egress-proxy).
    A proxy entry's C(name) is the request's host, C(type) its method (C(CONNECT), C(TLS)
    ... for refusals before a request), C(verdict) the refusal's rule, C(forwarded) or the
    response status; it also carries C(event), C(path) (the query replaced by
    C(?[redacted])), and for refusals C(rule) and C(reason). Header values and bodies are
    never logged, and the proxy redacts the secrets it knows.
  - Collection is incremental (a cursor per bottle) and idempotent; retention keeps the
    newest O(max_entries) entries, none older than O(max_age_days).
  - C(flags) marks names that look like encoded data - C(long-label), C(base32), C(hex),
    C(high-entropy), C(deep).
  - Refusals of the names C(bottle verify) sent from inside the bottle are not stored (they
    are counted in RV(probe_queries)); the audit is about what the agent asked.
  - An audit entry holds what the resolver or the proxy saw, never the bottle's environment.
attributes:
  check_mode:
    support: full
    details: Reads and reports what would be added; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  name:
    description: The bottle's name (its manifest's file name).
    type: str
    required: true
  backend:
    description: Where the bottle runs.
    type: str
    choices: [docker, smolmachines]
    required: true
  log_path:
    description:
      - The resolver's query log (Docker example).
      - Defaults to C(<state_dir>/<name>/log/queries.log), where the C(docker_bottle) module
        keeps it.
    type: path
  egress_log_path:
    description:
      - The egress proxy's log (Docker).
      - Defaults to C(<state_dir>/<name>/log/egress/egress.jsonl), where the
        C(docker_bottle) module mounts the proxy's log directory. A missing file is no
        entries (C(egress.log) 0 writes nothing).
    type: path
  state_dir:
    description:
      - The Docker backend's state directory (the C(state_dir) of M(botbottle.bottle.docker_bottle),
        C(docker_bottle_state_dir) of the role), where both logs are found.
    type: path
    default: /var/lib/bot-bottle/docker
  machine:
    description: The smolvm machine's name; defaults to C(bottle-<name>).
    type: str
  audit_dir:
    description: Directory of the audit logs.
    type: path
    default: /var/lib/bot-bottle/audit
  max_entries:
    description: Keep at most this many entries per bottle (the newest).
    type: int
    default: 10000
  max_age_days:
    description: Drop entries older than this many days.
    type: int
    default: 30
  since:
    description:
      - Return only entries at or after this point - a duration such as C(15m), C(2h), C(7d)
        or an ISO 8601 time. All entries when omitted.
    type: str
  collect:
    description: Read new refusals before returning entries; V(false) only reads the log.
    type: bool
    default: true
extends_documentation_fragment:
  - botbottle.bottle.smolvm
seealso:
  - module: botbottle.bottle.bottle_probe
"""

EXAMPLES = r"""
- name: Refused queries of the last hour, collected first
  botbottle.bottle.bottle_audit:
    name: web-dev
    backend: docker
    since: 1h
  register: audit

- name: Names that look like smuggled data
  ansible.builtin.debug:
    msg: "{{ audit.entries | selectattr('flags') | map(attribute='name') | list }}"
"""

RETURN = r"""
entries:
  description: The audit entries at or after O(since), oldest first.
  returned: always
  type: list
  elements: dict
  sample:
    - time: "2026-11-28T13:16:55Z"
      bottle: web-dev
      name: mfrggzdfmztwq2lknnwg23tpoa.api.example.com
      type: TXT
      verdict: NXDOMAIN
      source: dnsmasq
      flags: [base32, high-entropy]
    - time: "2026-11-28T13:17:02Z"
      bottle: web-dev
      name: api.example.com
      type: POST
      verdict: no-route-match
      source: egress-proxy
      flags: []
      event: refused
      path: /admin
      rule: no-route-match
      reason: POST /admin matches no entry of the 'matches' of route api.example.com (...)
added:
  description: How many entries this run added (would add, in check mode).
  returned: always
  type: int
dropped:
  description: How many entries retention removed.
  returned: always
  type: int
probe_queries:
  description: Refusals of C(bottle verify)'s own probe names seen in this collection (not stored).
  returned: always
  type: int
flagged:
  description: How many of the returned entries carry flags.
  returned: always
  type: int
path:
  description: The bottle's audit log.
  returned: always
  type: str
"""


def _source(module: AnsibleModule, now: datetime) -> Source:
    params = module.params
    name = params["name"]
    if params["backend"] == "docker":
        queries, egress_log = log_files(params["state_dir"], name)
        log = params["log_path"] or queries
        egress = params["egress_log_path"] or egress_log
        return with_sources(dnsmasq_source(log, now), {"egress": egress_source(egress)})
    client = client_from_params(params)
    machine = params["machine"] or object_name(name)

    def _events(cursor: Mapping[str, Any]) -> tuple[list[Refusal], dict[str, Any]]:
        return parse_smolvm_events(client.egress_events(machine)), dict(cursor)

    return _events


def _nothing(cursor: Mapping[str, Any]) -> tuple[list[Refusal], dict[str, Any]]:
    return [], dict(cursor)


def _report(module: AnsibleModule, result: Collected, now: datetime) -> None:
    params = module.params
    entries = list(result.entries)
    if params["since"]:
        try:
            cutoff = since_cutoff(params["since"], now)
        except ValueError as exc:
            module.fail_json(msg=f"{exc} (option since of botbottle.bottle.bottle_audit)")
        entries = [e for e in entries if str(e.get("time", "")) >= cutoff]
    module.exit_json(
        changed=result.changed,
        entries=entries,
        added=result.added,
        dropped=result.dropped,
        probe_queries=result.probes,
        flagged=sum(1 for e in entries if e.get("flags")),
        path=paths(params["audit_dir"], params["name"])[0],
    )


def run(module: AnsibleModule) -> None:
    params = module.params
    now = datetime.now(UTC)
    if params["max_entries"] < 1 or params["max_age_days"] < 1:
        module.fail_json(msg="max_entries and max_age_days must be at least 1")
    if params["since"]:
        try:
            since_cutoff(params["since"], now)
        except ValueError as exc:
            module.fail_json(msg=f"{exc} (option since of botbottle.bottle.bottle_audit)")
    source = _source(module, now) if params["collect"] else _nothing
    result = collect(
        params["audit_dir"],
        params["name"],
        source,
        now=now,
        limits=(params["max_entries"], params["max_age_days"]),
        write=params["collect"] and not module.check_mode,
    )
    _report(module, result, now)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "backend": {"type": "str", "required": True, "choices": ["docker", "smolmachines"]},
            "log_path": {"type": "path"},
            "egress_log_path": {"type": "path"},
            "state_dir": {"type": "path", "default": STATE_DIR},
            "machine": {"type": "str"},
            "audit_dir": {"type": "path", "default": "/var/lib/bot-bottle/audit"},
            "max_entries": {"type": "int", "default": 10000},
            "max_age_days": {"type": "int", "default": 30},
            "since": {"type": "str"},
            "collect": {"type": "bool", "default": True},
            **CLIENT_ARGUMENT_SPEC,
        },
        supports_check_mode=True,
    )
    try:
        run(module)
    except SmolvmError as exc:
        module.fail_json(msg=exc.describe(), code=exc.code)
    except Exception as exc:  # unexpected: say so, with the traceback
        module.fail_json(msg=f"bottle_audit failed: {exc}", exception=traceback.format_exc())


if __name__ == "__main__":
    main()
