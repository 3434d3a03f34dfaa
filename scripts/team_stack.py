"""Start or stop the team stack (PostgreSQL + MLflow with basic auth) on this machine.

    python scripts/team_stack.py start|stop|status|env [--state .team] [--port 5000]
        [--pg-port 5433] [--host 127.0.0.1] [--user ci]

`start` prints the three variables a client needs; `env` prints them again (for `eval`).
Passwords are generated at the first start into <state>/secrets.json (mode 0600), or taken
from MNIST_VAE_ADMIN_PASSWORD, MNIST_VAE_CI_PASSWORD, MNIST_VAE_READER_PASSWORD,
MNIST_VAE_POSTGRES_PASSWORD.
"""

import argparse
import shlex
import sys
from pathlib import Path

from mnist_vae import teamstack
from mnist_vae.config import load_params


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("start", "stop", "status", "env"))
    parser.add_argument("--state", type=Path, default=Path(".team"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--pg-port", type=int, default=5433)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--user", default="ci", choices=teamstack.USERS)
    return parser.parse_args(argv)


def exports(stack: teamstack.Stack, user: str) -> str:
    env = teamstack.client_env(stack, user)
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())


def main(argv: list[str]) -> int:
    args = parse(argv)
    stack = teamstack.Stack(args.state.resolve(), host=args.host, pg_port=args.pg_port,
                            mlflow_port=args.port, workers=args.workers)
    try:
        if args.command == "start":
            tracking = load_params().tracking
            teamstack.start(stack, tracking.experiment, tracking.registered_model)
            print(f"team stack up: MLflow {stack.url} on PostgreSQL {args.host}:{args.pg_port}, "
                  f"artifacts in {stack.artifacts}, state in {args.state} (secrets.json, 0600)")
            print("run the pipeline against it as `ci`:")
            print(f"  {exports(stack, args.user)}")
            print("other users' variables: python scripts/team_stack.py env --user reader|admin")
        elif args.command == "stop":
            teamstack.stop(stack)
            print(f"team stack stopped (data kept in {args.state})")
        elif args.command == "status":
            seconds = teamstack.wait_healthy(
                teamstack.Stack(stack.state_dir, args.host, args.pg_port, args.port,
                                ready_timeout_s=3))
            print(f"MLflow {stack.url} healthy ({seconds:.1f} s)")
        else:
            print(exports(stack, args.user))
    except teamstack.StackError as err:
        print(f"team_stack: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
