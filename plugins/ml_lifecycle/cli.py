"""The ``ml-lifecycle`` command: the local stack, the replay and the demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ml_lifecycle.local.stack import AIRFLOW_USER, DEFAULT_ROOT, LocalStack, stop_stack


def _up(args: argparse.Namespace) -> int:
    stack = LocalStack(root=args.root, api_port=args.port, fresh=args.fresh).start()
    print(
        f"Airflow UI:  http://localhost:{args.port}  (user {AIRFLOW_USER}, password {stack.airflow_password})"
    )
    print(f"Connections: source {stack.layout.env_file}")
    print(f"Logs:        {stack.layout.logs}")
    print("Stop with:   make down")
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = stop_stack(args.root)
    print(f"Stopped {', '.join(stopped)}" if stopped else f"No stack is recorded in {args.root}")
    return 0


def _status(args: argparse.Namespace) -> int:
    state_file = args.root / "stack.json"
    if not state_file.exists():
        print(f"No stack is recorded in {args.root}")
        return 1
    import os

    state = json.loads(state_file.read_text(encoding="utf-8"))
    dead = []
    for name, service in state.get("services", {}).items():
        try:
            os.killpg(int(service["pgid"]), 0)
            service["running"] = True
        except PermissionError:
            # The group exists but belongs to another user.
            service["running"] = True
        except (ProcessLookupError, KeyError, ValueError):
            service["running"] = False
            dead.append(name)
    print(json.dumps(state, indent=2))
    if dead:
        print(f"Not running: {', '.join(dead)}; restart with make down && make up")
        return 1
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    """Create the warehouse objects and the emulated AWS resources for the connections in the environment."""
    import os

    from airflow.sdk import BaseHook

    from ml_lifecycle.config import load_config
    from ml_lifecycle.local.stack import bootstrap_aws, bootstrap_warehouse

    config = load_config()
    bootstrap_warehouse(os.environ)
    endpoint_url = BaseHook.get_connection(config.aws.conn_id).extra_dejson.get("endpoint_url")
    if not endpoint_url:
        print("bootstrap: the AWS connection has no endpoint_url; provision real AWS resources with your IaC")
        return 1
    bootstrap_aws(config, endpoint_url)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from ml_lifecycle.local import replay

    return replay.main(args.replay_args)


def _bench(args: argparse.Namespace) -> int:
    from ml_lifecycle.local import benchmarks

    return benchmarks.main(args.bench_args)


def _demo(args: argparse.Namespace) -> int:
    from ml_lifecycle.local import demo

    return demo.run_demo(args.root, args.data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-lifecycle", description=__doc__)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="directory for the stack's state")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the local stack and the Airflow UI, then return")
    up.add_argument("--port", type=int, default=8080, help="port of the Airflow UI on localhost")
    up.add_argument("--fresh", action="store_true", help="delete the previous state first")
    up.set_defaults(handler=_up)

    down = commands.add_parser("down", help="stop everything 'up' started")
    down.set_defaults(handler=_down)

    status = commands.add_parser("status", help="show the running services and their ports")
    status.set_defaults(handler=_status)

    bootstrap = commands.add_parser(
        "bootstrap", help="create the warehouse schema and the emulated AWS resources (containers, tests)"
    )
    bootstrap.set_defaults(handler=_bootstrap)

    # The replay command parses its own arguments, including --help.
    replay = commands.add_parser(
        "replay", help="produce a sales CSV to Kafka (see 'replay --help')", add_help=False
    )
    replay.set_defaults(handler=_replay)

    demo = commands.add_parser("demo", help="run the whole lifecycle on the real data and print a summary")
    demo.add_argument("--data", type=Path, help="sales CSV to replay (default: the UCI Online Retail file)")
    demo.set_defaults(handler=_demo)

    bench = commands.add_parser("bench", help="run a benchmark (see 'bench --help')", add_help=False)
    bench.set_defaults(handler=_bench)

    args, extra = parser.parse_known_args(argv)
    if args.command == "replay":
        args.replay_args = extra
    elif args.command == "bench":
        args.bench_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
