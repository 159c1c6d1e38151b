"""The project's images on the real node: find them (tools/build-images.sh) and import into containerd only
what its persistent store does not hold yet.

build-images.sh keeps each image as an OCI image layout folder holding one reference. The node's containerd
keeps its content store and snapshots between test runs (``NodeLayout.containerd_root``), so
:func:`import_images` skips an image whose reference containerd already has, and for a new reference streams
a tar of that folder without the blobs containerd already holds: after a change under src/ only the
project's thin layer is written and unpacked; the multi-GB dependency layer is reused. Older references of
the same image are removed afterwards, and containerd's garbage collector frees what only they used.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REF_NAME = "org.opencontainers.image.ref.name"

Ctr = Callable[..., str]


@dataclass(frozen=True)
class NodeImage:
    """One image of tools/build-images.sh: its name, reference in containerd and OCI layout folder."""

    name: str
    reference: str
    layout: Path

    @property
    def repository(self) -> str:
        """The reference without its tag."""
        return self.reference.rsplit(":", 1)[0]

    def index(self) -> dict[str, object]:
        """The layout's index.json, reduced to this image's reference."""
        index = json.loads((self.layout / "index.json").read_text())
        index["manifests"] = [
            m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) == self.reference
        ]
        return index

    def blobs(self) -> list[str]:
        """Every blob digest the reference needs: its manifest, config and layers."""
        manifests = self.index()["manifests"]
        assert isinstance(manifests, list)
        digests = []
        for entry in manifests:
            manifest = json.loads(self.blob_path(entry["digest"]).read_text())
            digests += [
                entry["digest"],
                manifest["config"]["digest"],
                *(layer["digest"] for layer in manifest["layers"]),
            ]
        return digests

    def blob_path(self, digest: str) -> Path:
        """Where a blob lies in the layout folder."""
        algorithm, value = digest.split(":", 1)
        return self.layout / "blobs" / algorithm / value

    @property
    def built(self) -> bool:
        """True if the layout folder holds this reference with every blob it needs."""
        if not (self.layout / "index.json").is_file() or not self.index()["manifests"]:
            return False
        return all(self.blob_path(digest).is_file() for digest in self.blobs())


def listed_images(listing: str) -> list[NodeImage]:
    """The images of ``build-images.sh --list`` (lines of name, reference and layout folder)."""
    return [NodeImage(n, r, Path(folder)) for n, r, folder in (line.split() for line in listing.splitlines())]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _stream(image: NodeImage, held: set[str], sink: IO[bytes]) -> int:
    """Write the tar that ctr imports; return how many bytes of blobs it carries."""
    sent = 0
    with tarfile.open(fileobj=sink, mode="w|") as tar:
        _add_bytes(tar, "oci-layout", (image.layout / "oci-layout").read_bytes())
        _add_bytes(tar, "index.json", json.dumps(image.index()).encode())
        for digest in image.blobs():
            if digest in held:
                continue
            path = image.blob_path(digest)
            tar.add(str(path), arcname=str(path.relative_to(image.layout)))
            sent += path.stat().st_size
    return sent


def import_image(image: NodeImage, ctr_argv: list[str]) -> int:
    """Import one image, sending only the blobs containerd lacks; return the bytes sent."""
    listing = subprocess.run(
        [*ctr_argv, "content", "ls", "-q"], capture_output=True, text=True, timeout=120, check=True
    )
    held = set(listing.stdout.split())
    argv = [*ctr_argv, "images", "import", f"--base-name={image.repository}", "-"]
    with tempfile.TemporaryFile() as out:
        with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT) as proc:
            assert proc.stdin is not None
            try:
                sent = _stream(image, held, proc.stdin)
            finally:
                proc.stdin.close()
            code = proc.wait(timeout=1800)
        out.seek(0)
        output = out.read().decode(errors="replace")
    if code != 0:
        raise RuntimeError(f"ctr images import of {image.reference} exited {code}: {output}")
    return sent


def import_images(images: list[NodeImage], ctr: Ctr, ctr_argv: list[str]) -> dict[str, int]:
    """Import every image whose reference containerd lacks, then drop older references of the same
    images; return the bytes of blobs sent per imported image."""
    present = set(ctr("images", "ls", "-q").split())
    sent = {}
    for image in images:
        if image.reference not in present:
            sent[image.name] = import_image(image, ctr_argv)
    present = set(ctr("images", "ls", "-q").split())
    for image in images:
        if image.reference not in present:
            raise RuntimeError(f"{image.layout} did not import as {image.reference}")
        stale = [
            ref for ref in present if ref.rsplit(":", 1)[0] == image.repository and ref != image.reference
        ]
        if stale:
            ctr("images", "rm", *stale)
    return sent
