"""`limen start` and `limen configure`."""

from __future__ import annotations

import argparse
from pathlib import Path

from limen.client.proxy_addr import FORMS, normalize_proxy
from limen.config import ROLES, SAMPLE_CONFIG, Config, load_config, split_host_port
from limen.errors import BadParameter
from limen.runtime import eventloop, logs
from limen.runtime.logs import FORMATS, LEVELS


def register(sub: argparse._SubParsersAction) -> None:
    start = sub.add_parser("start", help="run the cluster's roles (auth, proxy, node)")
    start.add_argument("--config", help="YAML config file (see: limen configure)")
    start.add_argument("--data-dir", help="where keys, the database and the audit log live")
    start.add_argument("--roles", help=f"comma-separated roles to run, from: {', '.join(ROLES)}")
    start.add_argument("--log-format", choices=FORMATS,
                       help="text (default) or json: one JSON object per line")
    start.add_argument("--log-level", choices=LEVELS, help="default: info")
    start.add_argument("--diag-addr", metavar="HOST:PORT",
                       help="serve Prometheus /metrics, /healthz and /readyz here (plain "
                            "HTTP; off by default), e.g. 127.0.0.1:3000")
    node = start.add_argument_group("joining a node to a cluster that runs elsewhere")
    node.add_argument("--token", help="join token from: limen tokens add --type node")
    node.add_argument("--proxy", help=f"the proxy's web address: {FORMS}")
    node.add_argument("--ca-pin", help="the cluster CA pin that limen tokens add printed")
    node.add_argument("--insecure", action="store_true", help="join without a CA pin (tests)")
    node.add_argument("--name", help="the node's name (default: the host name)")
    node.add_argument("--labels", help="labels, e.g. env=dev,team=web")
    node.add_argument("--advertise-addr",
                      help="where the proxy dials this node, HOST[:PORT]; without it a node "
                           "joining through --proxy dials out (reverse tunnel)")
    node.add_argument("--listen-addr", help="the node's SSH listen address (default 0.0.0.0:3022)")
    start.set_defaults(func=cmd_start)

    configure = sub.add_parser("configure", help="print a commented sample config")
    configure.set_defaults(func=cmd_configure)


def build_config(args: argparse.Namespace) -> Config:
    config = load_config(args.config) if args.config else Config()
    if args.data_dir:
        config.data_dir = Path(args.data_dir)
    if args.log_format:
        config.log_format = args.log_format
    if args.log_level:
        config.log_level = args.log_level
    if args.diag_addr:
        split_host_port(args.diag_addr)  # a clear error for a malformed address
        config.diag_addr = args.diag_addr
    if args.roles:
        wanted = {r.strip() for r in args.roles.split(",") if r.strip()}
        unknown = wanted - set(ROLES)
        if unknown:
            raise BadParameter(
                f"unknown role(s): {', '.join(sorted(unknown))}; use {', '.join(ROLES)}"
            )
        config.auth.enabled = "auth" in wanted
        config.proxy.enabled = "proxy" in wanted
        config.ssh.enabled = "node" in wanted
    node = config.ssh
    node.join_token = args.token or node.join_token
    node.proxy_addr = args.proxy or node.proxy_addr
    if node.proxy_addr:  # the banner's URL, HOST:PORT or HOST (3080) all work
        node.proxy_addr = normalize_proxy(node.proxy_addr)
    node.ca_pin = args.ca_pin or node.ca_pin
    node.name = args.name or node.name
    node.advertise_addr = args.advertise_addr or node.advertise_addr
    if args.listen_addr:  # only when given: a tunneled node opens no port by default
        node.listen_addr = args.listen_addr
    if args.labels:
        node.labels = {**node.labels, **parse_labels(args.labels)}
    return config


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise BadParameter(f"label {part!r} should look like key=value")
        labels[key.strip()] = value.strip()
    return labels


def cmd_start(args: argparse.Namespace) -> int:
    from limen.config import JoinOptions
    from limen.service import Service, run_until_signalled

    loop_factory = eventloop.loop_factory()  # a bad LIMEN_EVENT_LOOP: refused before anything
    config = build_config(args)
    logs.configure(config.log_level, config.log_format)
    service = Service(config, join_options=JoinOptions(insecure=args.insecure))
    eventloop.run(run_until_signalled(service, load_config=lambda: build_config(args)),
                  loop_factory)
    return 0


def cmd_configure(_args: argparse.Namespace) -> int:
    print(SAMPLE_CONFIG, end="")
    return 0
