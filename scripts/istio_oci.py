#!/usr/bin/env python3
"""Writes the filter as an OCI image Istio can pull, without Docker, and renders the WasmPlugin.

    python3 scripts/istio_oci.py [--wasm FILE] [--out DIR] [--image REGISTRY/REPO:TAG]

Writes DIR/oci/ (default DIR: .work/istio), an OCI image layout (oci-layout, index.json,
blobs/sha256/...) holding one image in the "compat" variant of the Wasm image specification
that Istio's agent reads (pkg/wasm/imagefetcher.go, extractOCIStandardImage): an OCI
manifest with one application/vnd.oci.image.layer.v1.tar+gzip layer, a tar holding
`plugin.wasm`. The image is reproducible: fixed timestamps, owners and modes, so the same
wasm always gives the same manifest digest with the same zlib.

It then renders istio-example/wasmplugin.yaml into DIR/wasmplugin.yaml with the image
reference and the manifest digest as `sha256` (what Istio compares for oci:// urls).

Push the layout without rewriting the manifest, with any OCI tool, e.g.
    crane push DIR/oci REGISTRY/REPO:TAG
    oras cp --from-oci-layout DIR/oci:TAG REGISTRY/REPO:TAG
    skopeo copy --preserve-digests oci:DIR/oci:TAG docker://REGISTRY/REPO:TAG

Standard library only.
"""
import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "token_exchange_filter.opt.wasm"
TEMPLATE = ROOT / "istio-example" / "wasmplugin.yaml"

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


def canonical(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def layer_tar(wasm):
    """A tar with one file, plugin.wasm, with nothing that varies between builds."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(wasm)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def write_layout(wasm, out, tag):
    """Writes the image layout; returns the manifest digest (hex)."""
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data):
        digest = sha256(data)
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    tar = layer_tar(wasm)
    layer = blob(gzip.compress(tar, compresslevel=9, mtime=0))
    config = blob(canonical({
        "architecture": "wasm",
        "os": "wasi",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(tar)}"]},
    }))
    manifest_bytes = canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, **config},
        "layers": [{
            "mediaType": LAYER_TYPE,
            **layer,
            "annotations": {"org.opencontainers.image.title": "plugin.wasm"},
        }],
        "annotations": {"org.opencontainers.image.title": "token-exchange-filter"},
    })
    manifest = blob(manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            **manifest,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }
    (out / "index.json").write_bytes(canonical(index))
    (out / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    return manifest["digest"].removeprefix("sha256:")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wasm", type=Path, default=DEFAULT_WASM)
    parser.add_argument("--out", type=Path, default=ROOT / ".work" / "istio")
    parser.add_argument("--image", default="registry.example.com/gateway/token-exchange-filter:0.1.0")
    args = parser.parse_args()
    if not args.wasm.is_file():
        sys.exit(f"istio_oci.py: {args.wasm} not found: build the filter first "
                 "(bash scripts/build-wasm.sh)")
    repo, sep, tag = args.image.rpartition(":")
    if not sep or "/" in tag or "@" in args.image:
        sys.exit("istio_oci.py: --image must be REGISTRY/REPO:TAG")
    wasm = args.wasm.read_bytes()
    if wasm[:4] != b"\0asm":
        sys.exit(f"istio_oci.py: {args.wasm} is not a wasm module")
    digest = write_layout(wasm, args.out / "oci", tag)
    rendered = TEMPLATE.read_text(encoding="utf-8")
    rendered = rendered.replace("{{IMAGE}}", args.image).replace("{{MANIFEST_SHA256}}", digest)
    if "{{" in rendered:
        sys.exit("istio_oci.py: unrendered placeholder in the template")
    (args.out / "wasmplugin.yaml").write_text(rendered, encoding="utf-8")
    print(f"OCI layout:  {args.out / 'oci'} (tag {tag})")
    print(f"manifest:    sha256:{digest}")
    print(f"WasmPlugin:  {args.out / 'wasmplugin.yaml'}")
    print(f"push:        crane push {args.out / 'oci'} {args.image}")
    print(f"apply:       kubectl apply -f {args.out / 'wasmplugin.yaml'}")


if __name__ == "__main__":
    main()
