"""Throwaway PostgreSQL and Redis servers on free loopback ports, for the test suite.

    python tools/testenv.py -- pytest ...

installs the Debian packages when they are missing and we run as root (Chromium too, for the
dashboard's browser test), starts both servers in a temporary directory, exports
TOLLGATE_TEST_POSTGRES_URL and TOLLGATE_TEST_REDIS_URL to the command, and stops the servers
when it ends. tests/conftest.py calls the same functions when
pytest runs without this wrapper.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PG_BIN_DIRS = [Path(f"/usr/lib/postgresql/{v}/bin") for v in (17, 16, 15)]


def _log(message: str) -> None:
    print(f"[testenv] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"missing {', '.join(packages)}: install them (Debian: apt-get install)")
    _log(f"installing {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=True)
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=True)


def _pg_bin() -> Path:
    for directory in PG_BIN_DIRS:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    _apt_install("postgresql")
    for directory in PG_BIN_DIRS:
        if (directory / "initdb").exists():
            return directory
    raise RuntimeError("PostgreSQL binaries not found after installing the postgresql package")


def _as_postgres(command: list[str]) -> list[str]:
    # initdb refuses to run as root; run the server as the package's postgres user instead.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _wait_for_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


@contextlib.contextmanager
def postgres_server(workdir: Path) -> Iterator[str]:
    bin_dir = _pg_bin()
    data = workdir / "pg"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    pg_ctl = str(bin_dir / "pg_ctl")
    subprocess.run(
        _as_postgres(
            [pg_ctl, "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, 30)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        _apt_install("redis-server")
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, 10)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def services() -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="tollgate-test-") as tmp:
        workdir = Path(tmp)
        started = time.monotonic()
        with postgres_server(workdir) as pg_url, redis_server(workdir) as redis_url:
            _log(f"postgres and redis up in {time.monotonic() - started:.1f} s")
            yield {"TOLLGATE_TEST_POSTGRES_URL": pg_url, "TOLLGATE_TEST_REDIS_URL": redis_url}


CHROMIUM = "/usr/bin/chromium"


def ensure_chromium() -> None:
    """Debian's Chromium, which the dashboard's browser test drives (Playwright never downloads
    a browser here). Without root it is left to the developer: that test says what is missing."""
    _ensure(CHROMIUM, "chromium", "the browser test")


def _ensure(binary: str, package: str, used_by: str) -> None:
    if Path(binary).exists():
        return
    try:
        _apt_install(package)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        _log(f"{package} is not installed ({exc}); {used_by} will say so")


NGINX = "/usr/sbin/nginx"

_NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 0;  # Tollgate's own limit answers, with its own error
    upstream tollgate {{
{servers}
        keepalive 64;
        # Under the API's own 5 s: a connection the API closed idle is never reused (with
        # proxy_next_upstream off, a request sent on it as it closed would be a 502).
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://tollgate;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;          # streams pass through as they are written
            proxy_request_buffering off;
            proxy_read_timeout 600s;
            proxy_next_upstream off;      # a call is never sent twice
        }}
    }}
}}
"""


def ensure_nginx() -> None:
    """Debian's nginx: the round-robin load balancer of the many-process tests and bench."""
    _ensure(NGINX, "nginx", "the many-process tests")


@contextlib.contextmanager
def nginx_balancer(ports: list[int], workdir: Path) -> Iterator[str]:
    """nginx on a free loopback port, sending requests round-robin to `ports`."""
    if not Path(NGINX).exists():
        raise RuntimeError("nginx is missing: install it (Debian: apt-get install nginx)")
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o777)  # nginx's workers run as another user when started as root
    port = free_port()
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in ports)
    conf = workdir / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(dir=workdir, port=port, servers=servers))
    log = (workdir / "nginx.out").open("wb")
    process = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(workdir)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_for_port(port, 10)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1 :] if "--" in argv else argv
    if not command:
        print("usage: python tools/testenv.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    ensure_chromium()
    ensure_nginx()
    with services() as env:
        return subprocess.run(command, env={**os.environ, **env}).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
