#!/usr/bin/env bash
# Run HERE (a machine with PyPI), from the repository root, before a GPU session: downloads into .whl/ (git-ignored)
# the Python 3.12 wheels that the lent H200 image lacks (/work/.library/device/KINDS.md lists what it has: jax,
# flax, optax, pandas, pyarrow, tqdm, ... but not ott-jax, jaxopt, ray, jsonschema). Ray's wheel is 79 MB and the
# device tool carries at most 64 MiB, so its Java jars (32 MB, unused from Python) are cut out of it.
# Then on the device: run(command="bash benchmarks/device/run.sh", carry=[".whl"], timeout_s=590).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    ott-jax==0.6.0 jaxopt==0.8.5 ray==2.60.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 \
    referencing==0.37.0 rpds-py==0.30.0
python - .whl/ray-*.whl <<'PY'
import base64, hashlib, os, sys, zipfile
# Rewrite the wheel without ray/jars/ (Java workers) and drop their lines from RECORD, so pip installs it cleanly.
src = sys.argv[1]
tmp = src + ".tmp"
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
    for item in zin.infolist():
        if item.filename.startswith("ray/jars/"):
            continue
        data = zin.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b"ray/jars/"))
        zout.writestr(item, data)
os.replace(tmp, src)
print(f"{src}: {os.path.getsize(src) / 2**20:.1f} MiB without ray/jars/")
PY
du -sh .whl
