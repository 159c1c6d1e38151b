"""The real node's image import (tests/support/nodeimages.py) on a small OCI image layout folder: one
reference out of several, every blob it needs, and a tar stream without the blobs containerd holds."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from tests.support.nodeimages import REF_NAME, NodeImage, _stream, listed_images


def _blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}"


def _image(layout: Path, reference: str, layers: list[bytes]) -> dict[str, object]:
    config = _blob(layout, json.dumps({"ref": reference}).encode())
    manifest = {
        "schemaVersion": 2,
        "config": {"digest": config},
        "layers": [{"digest": _blob(layout, data)} for data in layers],
    }
    digest = _blob(layout, json.dumps(manifest).encode())
    return {"digest": digest, "annotations": {REF_NAME: reference}}


def _layout(tmp_path: Path) -> tuple[Path, list[str]]:
    layout = tmp_path / "nora-trainer"
    old = _image(layout, "localhost/nora-trainer:old", [b"dependencies", b"old code"])
    new = _image(layout, "localhost/nora-trainer:new", [b"dependencies", b"new code"])
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [old, new]}))
    layers = [f"sha256:{hashlib.sha256(d).hexdigest()}" for d in (b"dependencies", b"new code")]
    return layout, layers


def test_an_image_is_one_reference_with_every_blob_it_needs(tmp_path: Path) -> None:
    layout, layers = _layout(tmp_path)
    (image,) = listed_images(f"nora-trainer localhost/nora-trainer:new {layout}\n")
    assert image.repository == "localhost/nora-trainer"
    index = image.index()
    assert isinstance(index["manifests"], list)
    assert [m["annotations"][REF_NAME] for m in index["manifests"]] == ["localhost/nora-trainer:new"]
    blobs = image.blobs()
    assert len(blobs) == 4
    assert blobs[2:] == layers
    assert image.built
    image.blob_path(layers[1]).unlink()
    assert not image.built
    assert not NodeImage("x", "localhost/nora-trainer:absent", layout).built


def test_the_stream_leaves_out_the_blobs_containerd_holds(tmp_path: Path) -> None:
    layout, layers = _layout(tmp_path)
    image = NodeImage("nora-trainer", "localhost/nora-trainer:new", layout)
    sink = io.BytesIO()
    sent = _stream(image, {layers[0]}, sink)
    assert sent == sum(image.blob_path(d).stat().st_size for d in image.blobs() if d != layers[0])
    sink.seek(0)
    with tarfile.open(fileobj=sink) as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    assert names[:2] == ["oci-layout", "index.json"]
    assert f"blobs/sha256/{layers[1].split(':')[1]}" in names
    assert f"blobs/sha256/{layers[0].split(':')[1]}" not in names
    assert [m["annotations"][REF_NAME] for m in index["manifests"]] == ["localhost/nora-trainer:new"]
