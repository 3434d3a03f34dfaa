"""The team stack: a PostgreSQL server and an MLflow tracking server with basic auth on it.

Started and stopped by `make server` / `make server-stop` (scripts/team_stack.py) and by the
team tests; not a pipeline stage. Everything lives in one state directory (`.team/`, ignored
by git):

    secrets.json   passwords (mode 0600): generated at first start, or MNIST_VAE_<USER>_PASSWORD
    stack.json     ports, pids and the PostgreSQL data directory, for `stop`
    auth.ini       MLflow's basic-auth config (0600: it holds the user store's URI)
    artifacts/     proxied artifact storage (`--artifacts-destination`): clients need no
                   storage credentials
    logs/          mlflow.log (PostgreSQL logs next to its data directory)

PostgreSQL refuses to run as root, so under root its commands run as the `postgres` user
(`runuser -u postgres --`) on a data directory that user owns: `<state>/postgres` when the
postgres user can reach it, else `/var/lib/postgresql/mnist-vae-team/<hash of state>`.
Users of the MLflow server: `admin`; `ci`, who logs runs and registers models (EDIT on the
experiment, MANAGE on the registered model); `reader`, who may only read
(`default_permission = READ`, and `read_only_users`: no creating either, tracking_auth.py).
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

USERS = ("admin", "ci", "reader")
READ_ONLY_USERS = ("reader",)  # 403 on any write, creating included (tracking_auth.py)
AUTHORIZATION_FUNCTION = "mnist_vae.tracking_auth:authenticate"
DB_USER = "mlflow"  # the PostgreSQL role (superuser of this private cluster)
DATABASES = ("mlflow", "mlflow_auth")  # runs and registry; basic-auth users and permissions
SECRET_NAMES = (*USERS, "postgres", "flask")  # flask: the auth app's CSRF secret key
PG_HOME = Path("/var/lib/postgresql")


class StackError(RuntimeError):
    """The stack cannot start or stop; the message says what to do."""


@dataclass(frozen=True)
class Stack:
    """Where the stack lives and listens."""

    state_dir: Path
    host: str = "127.0.0.1"
    pg_port: int = 5433
    mlflow_port: int = 5000
    workers: int = 2
    ready_timeout_s: float = 120.0
    # seconds a worker trusts a checked password: each check is a PBKDF2 hash (most of a
    # request's cost); a changed password takes up to this long to reach every worker
    auth_cache_ttl_s: int = 60

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def artifacts(self) -> Path:
        return self.state_dir / "artifacts"


# --- secrets -------------------------------------------------------------------------------

def load_secrets(state_dir: Path) -> dict[str, str]:
    """Passwords from the state dir; missing ones from MNIST_VAE_<NAME>_PASSWORD or generated."""
    path = Path(state_dir) / "secrets.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    for name in SECRET_NAMES:
        from_env = os.environ.get(f"MNIST_VAE_{name.upper()}_PASSWORD")
        stored[name] = from_env or stored.get(name) or secrets.token_urlsafe(24)
    _write_private(path, json.dumps(stored, indent=2) + "\n")
    return stored


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def client_env(stack: Stack, user: str = "ci") -> dict[str, str]:
    """The MLFLOW_* variables a client (the pipeline) needs to log to the stack as `user`."""
    password = load_secrets(stack.state_dir)[user]
    return {"MLFLOW_TRACKING_URI": stack.url, "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": password}


# --- PostgreSQL ----------------------------------------------------------------------------

def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin directory; installs Debian's package as root."""
    found = _postgres_bins()
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True, env=env)
        found = _postgres_bins()
    if not found:
        raise StackError("PostgreSQL is not installed: `sudo apt-get install postgresql` "
                         "(Debian/Ubuntu), then run this again")
    return found[-1]


def _postgres_bins() -> list[Path]:
    bins = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")]
    if not bins and shutil.which("pg_ctl"):
        bins = [Path(shutil.which("pg_ctl")).parent]
    return sorted(bins, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def _as_postgres(args: list[str | Path]) -> list[str]:
    """`args` run as the postgres user when we are root (PostgreSQL refuses root)."""
    args = [str(a) for a in args]
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def postgres_root(state_dir: Path) -> Path:
    """The directory holding PostgreSQL's data and log, owned by whoever runs the server."""
    state_dir = Path(state_dir).resolve()
    if os.geteuid() != 0:
        return state_dir / "postgres"
    reachable = subprocess.run(_as_postgres(["test", "-x", state_dir]),
                               capture_output=True).returncode == 0
    if reachable:
        return state_dir / "postgres"
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
    return PG_HOME / "mnist-vae-team" / digest


def _pg_ctl(stack: Stack, root: Path, *args: str, check: bool = True):
    cmd = _as_postgres([postgres_bin() / "pg_ctl", "-D", root / "data", *args])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=stack.ready_timeout_s + 30)
    if check and done.returncode != 0:
        log = root / "postgres.log"
        tail = _tail(log) if log.is_file() else ""
        raise StackError(f"pg_ctl {' '.join(args)} failed: {done.stderr.strip()}\n{tail}")
    return done


def init_postgres(stack: Stack, root: Path, password: str) -> None:
    """A new cluster at `root/data` listening on 127.0.0.1 only, password auth (scram)."""
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    os.chmod(root, 0o700)
    pwfile = root / "initdb.pw"  # initdb reads the superuser password from a file only
    _write_private(pwfile, password + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    cmd = _as_postgres([postgres_bin() / "initdb", "-D", root / "data", "-U", DB_USER,
                        "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                        "--no-locale"])
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise StackError(f"initdb failed: {done.stderr.strip()}")


def _postgres_settings(stack: Stack) -> list[str]:
    """Server options: TCP on the stack's host and port, no Unix socket (paths get long)."""
    return ["-o", f"-c listen_addresses={stack.host} -c port={stack.pg_port} "
                  "-c unix_socket_directories=''"]


def start_postgres(stack: Stack, root: Path) -> None:
    """Start the cluster and wait (bounded) until it accepts connections."""
    _pg_ctl(stack, root, "-l", str(root / "postgres.log"), "-w", "-t",
            str(int(stack.ready_timeout_s)), *_postgres_settings(stack), "start")


def stop_postgres(stack: Stack, root: Path) -> None:
    if (root / "data" / "postmaster.pid").exists():
        _pg_ctl(stack, root, "-m", "fast", "-w", "-t", str(int(stack.ready_timeout_s)), "stop",
                check=False)


def database_uri(stack: Stack, password: str, database: str) -> str:
    return f"postgresql+psycopg://{DB_USER}:{password}@{stack.host}:{stack.pg_port}/{database}"


def create_databases(stack: Stack, password: str) -> None:
    """The runs database and the basic-auth user store, when missing."""
    import psycopg

    with psycopg.connect(host=stack.host, port=stack.pg_port, user=DB_USER, password=password,
                         dbname="postgres", autocommit=True, connect_timeout=10) as conn:
        existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in DATABASES:
            if name not in existing:
                conn.execute(f'CREATE DATABASE "{name}"')


# --- MLflow --------------------------------------------------------------------------------

def write_auth_config(stack: Stack, db_password: str) -> Path:
    """MLflow's basic-auth ini: users in PostgreSQL, everyone may read, `admin` is the admin."""
    path = stack.state_dir / "auth.ini"
    _write_private(path, "[mlflow]\n"
                   "default_permission = READ\n"
                   f"database_uri = {database_uri(stack, db_password, 'mlflow_auth')}\n"
                   "admin_username = admin\n"
                   f"authorization_function = {AUTHORIZATION_FUNCTION}\n"
                   f"read_only_users = {','.join(READ_ONLY_USERS)}\n"
                   f"auth_cache_ttl_seconds = {stack.auth_cache_ttl_s}\n")
    return path


def start_mlflow(stack: Stack, secret: dict[str, str]) -> int:
    """`mlflow server --app-name basic-auth` on PostgreSQL with proxied artifacts; its pid."""
    stack.logs.mkdir(parents=True, exist_ok=True)
    stack.artifacts.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_AUTH_CONFIG_PATH=str(write_auth_config(stack, secret["postgres"])),
               MLFLOW_AUTH_ADMIN_PASSWORD=secret["admin"],  # read on the first start only
               MLFLOW_FLASK_SERVER_SECRET_KEY=secret["flask"],
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])  # uvicorn, by name
    package_root = str(Path(__file__).resolve().parents[1])  # this mnist_vae, for the auth hook
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
           "--host", stack.host, "--port", str(stack.mlflow_port),
           "--workers", str(stack.workers),
           "--backend-store-uri", database_uri(stack, secret["postgres"], "mlflow"),
           "--artifacts-destination", str(stack.artifacts.resolve()), "--serve-artifacts"]
    with open(stack.logs / "mlflow.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=stack.state_dir, start_new_session=True)
    wait_healthy(stack, proc)
    return proc.pid


def wait_healthy(stack: Stack, proc: subprocess.Popen | None = None) -> float:
    """Poll /health until it answers 200 (bounded); the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < stack.ready_timeout_s:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"mlflow server exited {proc.returncode}:\n"
                             f"{_tail(stack.logs / 'mlflow.log')}")
        try:
            with urllib.request.urlopen(stack.url + "/health", timeout=2) as reply:
                if reply.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.5)
    raise StackError(f"mlflow server not healthy after {stack.ready_timeout_s:g} s:\n"
                     f"{_tail(stack.logs / 'mlflow.log')}")


def api(stack: Stack, method: str, endpoint: str, body: dict | None = None,
        auth: tuple[str, str] | None = None, version: str = "2.0",
        prefix: str = "api") -> tuple[int, dict]:
    """One REST call to the MLflow server (`prefix` ajax-api: the UI's): (status, JSON body)."""
    url = f"{stack.url}/{prefix}/{version}/mlflow/{endpoint}"
    data = None
    if body is not None and method == "GET":
        url += "?" + urllib.parse.urlencode(body)
    elif body is not None:
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw or b"{}")
        except ValueError:
            return err.code, {"message": raw.decode(errors="replace")[:500]}


def provision(stack: Stack, secret: dict[str, str], experiment: str, model: str) -> None:
    """Users `ci` and `reader`; the experiment and registered model, `ci` allowed to write."""
    admin = ("admin", secret["admin"])
    for user in ("ci", "reader"):
        status, body = api(stack, "POST", "users/create",
                           {"username": user, "password": secret[user]}, admin)
        if status != 200 and "already exists" in json.dumps(body):  # keep it in step
            status, body = api(stack, "PATCH", "users/update-password",
                               {"username": user, "password": secret[user]}, admin)
        if status != 200:
            raise StackError(f"creating MLflow user {user!r} failed ({status}): {body}")
    experiment_id = _ensure(stack, admin, "experiments/get-by-name", {"experiment_name":
                            experiment}, "experiments/create", {"name": experiment},
                            lambda b: b.get("experiment", b).get("experiment_id"))
    _ensure(stack, admin, "registered-models/get", {"name": model},
            "registered-models/create", {"name": model}, lambda b: model)
    for resource_type, resource_id, level in (("experiment", experiment_id, "EDIT"),
                                              ("registered_model", model, "MANAGE")):
        grant = {"username": "ci", "resource_type": resource_type, "resource_id": resource_id}
        status, body = api(stack, "POST", "users/permissions/grant",
                           {**grant, "permission": level}, admin, "3.0")
        if body.get("error_code") == "RESOURCE_ALREADY_EXISTS":  # a restart: set it again
            api(stack, "POST", "users/permissions/revoke", grant, admin, "3.0")
            status, body = api(stack, "POST", "users/permissions/grant",
                               {**grant, "permission": level}, admin, "3.0")
        if status != 200:
            raise StackError(f"granting ci {level} on {resource_type} {resource_id} failed "
                             f"({status}): {body}")


def _ensure(stack, admin, get, get_query, create, create_body, key) -> str:
    status, body = api(stack, "GET", get, get_query, admin)
    if status == 200:
        return key(body)
    status, body = api(stack, "POST", create, create_body, admin)
    if status != 200:
        raise StackError(f"{create} failed ({status}): {body}")
    return key(body)


# --- the whole stack -----------------------------------------------------------------------

def read_state(stack: Stack) -> dict:
    path = stack.state_dir / "stack.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def start(stack: Stack, experiment: str = "mnist-vae", model: str = "mnist-vae") -> dict:
    """Start PostgreSQL and MLflow (initialising on first use), provision users; the state."""
    state_dir = Path(stack.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700 if os.geteuid() != 0 else 0o711)  # postgres may need to pass
    if read_state(stack).get("mlflow_pid") and psutil.pid_exists(read_state(stack)["mlflow_pid"]):
        raise StackError(f"the stack in {state_dir} is already running; "
                         "`make server-stop` first")
    secret = load_secrets(state_dir)
    root = postgres_root(state_dir)
    if not (root / "data" / "PG_VERSION").is_file():
        init_postgres(stack, root, secret["postgres"])
    start_postgres(stack, root)
    state = {"postgres_root": str(root), **{k: str(v) if isinstance(v, Path) else v
                                              for k, v in asdict(stack).items()}}
    _write_private(state_dir / "stack.json", json.dumps(state, indent=2) + "\n")
    try:
        create_databases(stack, secret["postgres"])
        state["mlflow_pid"] = start_mlflow(stack, secret)
        _write_private(state_dir / "stack.json", json.dumps(state, indent=2) + "\n")
        provision(stack, secret, experiment, model)
    except BaseException:
        stop(stack)
        raise
    return state


def stop(stack: Stack) -> None:
    """Stop MLflow (its process group), then PostgreSQL. Data and secrets stay."""
    state = read_state(stack)
    pid = state.get("mlflow_pid")
    if pid and psutil.pid_exists(pid):
        _kill_group(pid)
    if state.get("postgres_root"):
        stop_postgres(stack, Path(state["postgres_root"]))
    state.pop("mlflow_pid", None)
    if state:
        _write_private(Path(stack.state_dir) / "stack.json", json.dumps(state, indent=2) + "\n")


def destroy(stack: Stack) -> None:
    """Stop the stack and delete its data (PostgreSQL cluster included)."""
    stop(stack)
    root = read_state(stack).get("postgres_root")
    if root:
        shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(stack.state_dir, ignore_errors=True)


def kill_mlflow(stack: Stack) -> None:
    """Stop only the MLflow server (PostgreSQL keeps running)."""
    state = read_state(stack)
    if state.get("mlflow_pid") and psutil.pid_exists(state["mlflow_pid"]):
        _kill_group(state["mlflow_pid"])


def restart_mlflow(stack: Stack) -> None:
    """Start the MLflow server again after `kill_mlflow` (PostgreSQL still up)."""
    state = read_state(stack)
    state["mlflow_pid"] = start_mlflow(stack, load_secrets(stack.state_dir))
    _write_private(Path(stack.state_dir) / "stack.json", json.dumps(state, indent=2) + "\n")


def _kill_group(pid: int, grace_s: float = 10) -> None:
    """SIGTERM the process group, SIGKILL what is left after `grace_s`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        _reap(pid)
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect our child's exit status (a zombie would look alive)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""
