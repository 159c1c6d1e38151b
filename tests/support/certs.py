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


def _openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError(
            "the openssl CLI is needed to generate test certificates (apt-get install openssl)"
        )
    proc = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr}")


def generate(directory: Path) -> Credentials:
    """Create a throwaway CA, a 127.0.0.1 serving certificate it signs, an RSA service-account key
    and a static admin token (member of system:masters) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    d = directory
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3",
        "-subj",
        "/CN=nora-test-ca",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.crt"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=kube-apiserver",
        "-keyout",
        str(d / "apiserver.key"),
        "-out",
        str(d / "apiserver.csr"),
    )
    ext = d / "apiserver.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(d / "apiserver.csr"),
        "-CA",
        str(d / "ca.crt"),
        "-CAkey",
        str(d / "ca.key"),
        "-CAcreateserial",
        "-days",
        "3",
        "-extfile",
        str(ext),
        "-out",
        str(d / "apiserver.crt"),
    )
    _openssl("genrsa", "-out", str(d / "service-account.key"), "2048")
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
