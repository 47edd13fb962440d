#!/usr/bin/env bash
# One algdist run on every worker of a Cloud TPU VM slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE -- --config configs/dark_room.py:paper \
#       --workdir /mnt/shared/dark_room
#
# Copies this tree (without .git, .venv, runs) to every worker, installs it
# with ".[tpu]" in a virtualenv there, kills processes that still hold the
# TPU from an earlier run, then runs `python -m algdist.main ARGS` on all
# workers at once with ALGDIST_DISTRIBUTED=1 (JAX finds the coordinator in
# the TPU metadata; algdist/distributed.py). The workdir must be one
# directory every worker sees (a bucket mount or NFS), given as an absolute
# path (orbax needs one). PROJECT selects the gcloud project; REMOTE_DIR the
# checkout's folder on the workers (default algdist).
set -euo pipefail

if [[ $# -lt 3 || $3 != "--" ]]; then
  echo "usage: $0 TPU_NAME ZONE -- ALGDIST_MAIN_ARGS..." >&2
  exit 2
fi
name=$1
zone=$2
shift 3
remote=${REMOTE_DIR:-algdist}
gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone "$zone" --worker=all)
if [[ -n ${PROJECT:-} ]]; then
  where+=(--project "$PROJECT")
fi

archive=$(mktemp --suffix=.tgz)
trap 'rm -f "$archive"' EXIT
tar czf "$archive" --exclude=.git --exclude=.venv --exclude=runs .
"${gcloud_tpu[@]}" scp "$archive" "${name}:algdist.tgz" "${where[@]}"

setup="rm -rf ${remote} && mkdir -p ${remote} && tar xzf algdist.tgz -C ${remote}"
setup+=" && cd ${remote} && python3 -m venv .venv"
setup+=" && .venv/bin/pip install -q -e '.[tpu]'"
# A process left from an earlier run holds /dev/accel* and the new one
# cannot start: kill whatever holds it.
setup+=" && (sudo fuser -k -9 /dev/accel* 2>/dev/null || true)"
"${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --command "$setup"

args=$(printf '%q ' "$@")
"${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --command \
  "cd ${remote} && ALGDIST_DISTRIBUTED=1 .venv/bin/python -m algdist.main ${args}"
