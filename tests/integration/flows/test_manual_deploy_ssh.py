"""Manual deploy to a Linux host over SSH: a real sshd on loopback runs the generated bash script
(which uses the stack's Docker engine); a failed health check rolls back on the host itself."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.net import free_port
from tests.support.web_app import push_web_app

pytestmark = [pytest.mark.stack, pytest.mark.docker]
SSHD = Path("/usr/sbin/sshd")


@pytest.fixture(scope="module")
def sshd(docker_url):
    if not SSHD.exists():
        pytest.skip("openssh-server is not installed")
    root = Path(tempfile.mkdtemp(prefix="opsflow-sshd-"))
    for name in ("hostkey", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    (root / "authorized_keys").write_text((root / "client.pub").read_text())
    port = free_port()
    (root / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {root / 'hostkey'}
PidFile {root / 'sshd.pid'}
AuthorizedKeysFile {root / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
SetEnv DOCKER_HOST={docker_url}
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(root / "sshd_config")],
                              stdout=open(root / "log", "wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, (root / "log").read_text()
                time.sleep(0.1)
        host_key = " ".join((root / "hostkey.pub").read_text().split()[:2])
        yield {"port": port, "key": (root / "client").read_text(), "known_hosts": f"[127.0.0.1]:{port} {host_key}"}
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(root, ignore_errors=True)


def test_deploy_over_ssh_runs_the_script_and_a_failed_health_check_rolls_back(stack, sshd, docker_client):
    from blocks import SshHostTarget
    from tests.support.edge_nodes import run_deploy

    uid = uuid.uuid4().hex[:6]
    app, port = f"ssh-{uid}", free_port()
    push_web_app(app, port, {"v1": True, "v2": False}, deadline_s=4)
    SshHostTarget(name=f"host-{uid}", hostname="127.0.0.1", port=sshd["port"], user=getpass.getuser(),
                  private_key=sshd["key"], known_hosts=sshd["known_hosts"]).save(f"host-{uid}")
    SshHostTarget(name=f"unpinned-{uid}", hostname="127.0.0.1", port=sshd["port"], user=getpass.getuser(),
                  private_key=sshd["key"]).save(f"unpinned-{uid}")

    def serving() -> str:
        return httpx.get(f"http://127.0.0.1:{port}/index.html", timeout=5).text.strip()

    try:
        done = run_deploy(app=app, version="v1", targets=[f"host-{uid}"], target_kind="ssh")
        assert done["targets"][f"host-{uid}"]["components"][0]["health"] == "deployed v1" and serving() == "v1"
        with pytest.raises(Exception, match=r"(?s)exited with 1:.*previous version is serving again"):
            run_deploy(app=app, version="v2", targets=[f"host-{uid}"], target_kind="ssh")
        assert serving() == "v1"  # the script put v1 back on the host
        with pytest.raises(Exception, match="has no known_hosts"):
            run_deploy(app=app, version="v1", targets=[f"unpinned-{uid}"], target_kind="ssh")
        assert serving() == "v1"
    finally:
        for name in (f"{app}-web", f"{app}-web-previous"):
            for container in docker_client.containers.list(all=True, filters={"name": f"^{name}$"}):
                container.remove(force=True)
