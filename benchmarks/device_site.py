"""Pack the Python packages the GPU machine lacks for ``mira-bench`` into one ``.tar.xz``.

The device tool's GPU machine has torch, transformers, pillow, jinja2 and numpy, but not
LangGraph, LangChain Core, pydantic or diffusers; a call carries at most 64 MiB of working tree,
and the repository takes about 58 MB of it. Wheels of those packages take about 13 MB; this
script downloads them for the machine's Python (3.12, manylinux x86-64), unpacks them, drops
what a micro-world bench never imports (diffusers' pipelines other than FLUX.2's, and its
modular pipelines) and packs the rest with xz: about 5.4 MB. ``PACKAGES`` is what a
micro-world bench imported beyond the machine's own packages (2026-11: it has xxhash and
httpx's httpcore, for instance, and they are not carried); langsmith's optional zstandard
(5.5 MB) is left out. ``benchmarks/loop_gpu.sh`` unpacks it (``SITE=``).

    python benchmarks/device_site.py .whl/site312.tar.xz
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

#: (name, version) of every package to carry: the project's core dependencies and what they
#: import, the versions of the development machine's environment
PACKAGES = (
    ("langgraph", "1.2.22"),
    ("langgraph-checkpoint", "4.3.2"),
    ("langgraph-prebuilt", "1.1.2"),
    ("langgraph-sdk", "0.4.14"),
    ("langchain-core", "1.7.2"),
    ("langchain-protocol", "0.0.20"),
    ("langsmith", "0.15.0"),
    ("orjson", "3.13.0"),
    ("ormsgpack", "1.13.1"),
    ("jsonpatch", "1.47"),
    ("jsonpointer", "3.12"),
    ("tenacity", "9.2.1"),
    ("uuid_utils", "0.19.0"),
    ("websockets", "17.4"),
    ("requests-toolbelt", "1.0.0"),
    ("distro", "1.9.0"),
    ("httpx2", "2.16.2"),
    ("sniffio", "1.3.1"),
    ("truststore", "0.10.5"),
    ("pydantic", "2.14.3"),
    ("pydantic-core", "2.50.4"),
    ("annotated-types", "0.8.0"),
    ("typing-inspection", "0.4.5"),
    ("peft", "0.21.2"),
    ("diffusers", "0.42.1"),
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
#: diffusers' subpackages of these folders that a bench imports; the folders' other
#: subpackages (other model families' pipelines) are left out
KEEP = {"pipelines": {"flux2"}, "modular_pipelines": set()}


def trim(site: Path) -> int:
    """Remove from an unpacked ``site`` the diffusers subpackages ``KEEP`` leaves out; returns
    how many folders went. The folders' own modules (``pipeline_utils.py``, ...) stay."""
    removed = 0
    for folder, keep in KEEP.items():
        root = site / "diffusers" / folder
        if not root.is_dir():
            continue
        for sub in sorted(root.iterdir()):
            if sub.is_dir() and sub.name != "__pycache__" and sub.name not in keep:
                shutil.rmtree(sub)
                removed += 1
    return removed


def pack(wheels: Path, out: Path) -> None:
    """Unpack every wheel of ``wheels``, trim diffusers and write ``out`` (.tar.xz)."""
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                z.extractall(site)
        trim(site)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w:xz") as tar:
            for path in sorted(site.iterdir()):
                tar.add(path, arcname=path.name)
        partial.replace(out)  # all or nothing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the .tar.xz to write")
    p.add_argument("--wheels", type=Path, help="a folder of the wheels already downloaded")
    args = p.parse_args(argv)
    if not args.out.name.endswith(".tar.xz"):
        p.error(f"out must end in .tar.xz, got {str(args.out)!r}")
    with tempfile.TemporaryDirectory() as tmp:
        wheels = args.wheels or Path(tmp)
        if args.wheels is None:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
            command += ["--python-version", "3.12", "--implementation", "cp", "-d", str(wheels)]
            for platform in PLATFORMS:
                command += ["--platform", platform]
            command += [f"{name}=={version}" for name, version in PACKAGES]
            subprocess.run(command, check=True)
        pack(wheels, args.out)
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
