"""Self-generated credentials for the test control plane: CA, serving cert, service-account key, token."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ADMIN_USER = "nora-test-admin"


@dataclass(frozen=True)
class Credentials:
    """Files and secrets the apiserver and its clients share."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    service_account_key: Path
    token_file: Path
    admin_token: str


def _openssl(directory: Path, command: str) -> None:
    """Run ``openssl <command>`` in ``directory`` (words split on spaces; file names are relative)."""
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError(
            "the openssl CLI is needed to generate test certificates (apt-get install openssl)"
        )
    proc = subprocess.run([exe, *command.split()], cwd=directory, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {command} failed: {proc.stderr}")


_SERVING_NAMES = "IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default.svc"
_SERVING_USAGE = "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"


def generate(directory: Path, extra_ips: tuple[str, ...] = ()) -> Credentials:
    """Create a throwaway CA, a serving certificate it signs (127.0.0.1, the ``kubernetes`` Service and
    ``extra_ips``), an RSA service-account key and a static admin token (member of system:masters)."""
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        d,
        "req -x509 -newkey rsa:2048 -nodes -days 3 -subj /CN=nora-test-ca -keyout ca.key -out ca.crt "
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
    )
    _openssl(
        d, "req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout apiserver.key -out apiserver.csr"
    )
    names = ",".join([_SERVING_NAMES, *(f"IP:{ip}" for ip in extra_ips)])
    (d / "apiserver.ext").write_text(f"subjectAltName={names}\n{_SERVING_USAGE}")
    _openssl(
        d,
        "x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3 "
        "-extfile apiserver.ext -out apiserver.crt",
    )
    _openssl(d, "genrsa -out service-account.key 2048")
    token = secrets.token_hex(24)
    token_file = d / "tokens.csv"
    token_file.write_text(f'{token},{ADMIN_USER},{ADMIN_USER}-uid,"system:masters"\n')
    for key in ("ca.key", "apiserver.key", "service-account.key", "tokens.csv"):
        (d / key).chmod(0o600)
    return Credentials(
        ca_cert=d / "ca.crt",
        ca_key=d / "ca.key",
        serving_cert=d / "apiserver.crt",
        serving_key=d / "apiserver.key",
        service_account_key=d / "service-account.key",
        token_file=token_file,
        admin_token=token,
    )
