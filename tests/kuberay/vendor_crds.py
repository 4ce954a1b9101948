"""Vendor KubeRay's CRD schemas (RayCluster, RayJob, RayService, apiVersion ray.io/v1) for the tests.

    git clone https://github.com/ray-project/kuberay && python tests/kuberay/vendor_crds.py kuberay v1.7.0

writes tests/kuberay/crds-<tag>.json: each kind's ``openAPIV3Schema`` from
``ray-operator/config/crd/bases/ray.io_<kind>s.yaml`` at that tag, unchanged except that descriptions
and ``status`` (which a manifest does not set) are dropped and every subtree that occurs more than once
(the pod template of each group, env, volumes, ...) is stored once under ``$defs`` and referenced, which
takes the three ~1 MB CRDs to ~80 kB. The API server checks manifests against exactly these schemas.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

KINDS = {"RayCluster": "rayclusters", "RayJob": "rayjobs", "RayService": "rayservices"}
SHARED_MIN_CHARS = 1500  # repeated subtrees at least this large go to $defs
NAME_MAPS = ("properties", "patternProperties")  # their values map names to schemas: never shared whole


def crd_schema(checkout: Path, tag: str, plural: str) -> dict[str, Any]:
    path = f"ray-operator/config/crd/bases/ray.io_{plural}.yaml"
    text = subprocess.run(
        ["git", "-C", str(checkout), "show", f"{tag}:{path}"], check=True, capture_output=True, text=True
    ).stdout
    crd = yaml.safe_load(text)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _without_descriptions(version["schema"]["openAPIV3Schema"])
    schema["properties"].pop("status", None)
    return schema


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


def _digest(node: Any) -> str:
    return hashlib.sha1(json.dumps(node, sort_keys=True).encode()).hexdigest()[:12]


def share_repeated(roots: dict[str, Any]) -> dict[str, Any]:
    """The roots with every repeated large schema replaced by a ``$ref`` into ``$defs`` (a ``properties``
    mapping is not a schema, so it is never replaced itself, only the schemas in it)."""
    seen: Counter[str] = Counter()
    size: dict[str, int] = {}

    def count(node: Any, is_map: bool = False) -> None:
        if isinstance(node, dict):
            if not is_map:
                key = _digest(node)
                seen[key] += 1
                size[key] = len(json.dumps(node))
            for k, v in node.items():
                count(v, is_map=not is_map and k in NAME_MAPS)
        elif isinstance(node, list):
            for v in node:
                count(v)

    for root in roots.values():
        count(root)
    defs: dict[str, Any] = {}

    def shared(node: Any, top: bool = False, is_map: bool = False) -> Any:
        if isinstance(node, dict):
            inner = {k: (v, not is_map and k in NAME_MAPS) for k, v in node.items()}
            key = _digest(node)
            if not (top or is_map) and seen[key] > 1 and size[key] >= SHARED_MIN_CHARS:
                if key not in defs:
                    defs[key] = {}  # reserve the name, then fill it (its own repeats become refs too)
                    defs[key] = {k: shared(v, is_map=m) for k, (v, m) in inner.items()}
                return {"$ref": f"#/$defs/{key}"}
            return {k: shared(v, is_map=m) for k, (v, m) in inner.items()}
        if isinstance(node, list):
            return [shared(v) for v in node]
        return node

    out = {kind: shared(root, top=True) for kind, root in roots.items()}
    return {"$defs": dict(sorted(defs.items())), **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="a git clone of github.com/ray-project/kuberay")
    parser.add_argument("tag", help="the KubeRay release, e.g. v1.7.0")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "-C", str(args.checkout), "rev-list", "-n1", args.tag],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    roots = {kind: crd_schema(args.checkout, args.tag, plural) for kind, plural in KINDS.items()}
    vendored = {
        "$comment": (
            f"KubeRay {args.tag} ({commit}) ray-operator/config/crd/bases/ray.io_{{rayclusters,rayjobs,"
            "rayservices}.yaml, apiVersion ray.io/v1 openAPIV3Schema; descriptions and status dropped, "
            "repeated subtrees shared through $defs (tests/kuberay/vendor_crds.py)"
        ),
        "kuberay": args.tag,
        **share_repeated(roots),
    }
    out = Path(__file__).with_name(f"crds-{args.tag}.json")
    out.write_text(json.dumps(vendored, sort_keys=False, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
