#!/usr/bin/env bash
# Builds the image's binary from exactly what `docker build .` would send: copies the
# tree through .dockerignore (.ci/docker_context.py), then runs the Dockerfile's own
# `RUN cargo build ...` command in that copy. A file the build needs but the context
# leaves out (an include_str!, the migrations) fails here as it would in Docker.
#
# A real `docker build` stays out of CI: this machine cannot pull the base images.
# CARGO_TARGET_DIR defaults to this checkout's target/, so the dependencies compiled by
# CI's own release build are reused and only the workspace crates build again.
# Usage: .ci/docker-context-build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# The Dockerfile's build command: the `cargo build` of its `RUN` line, up to `&&` or `\`.
command=$(sed -n 's/^RUN \(cargo build[^&\\]*\).*/\1/p' Dockerfile | head -1 | sed 's/[[:space:]]*$//')
if [ -z "$command" ]; then
  echo "no 'RUN cargo build ...' line in the Dockerfile" >&2
  exit 1
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 .ci/docker_context.py . "$scratch/src"

echo "in the Docker context: $command"
cd "$scratch/src"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
# shellcheck disable=SC2086 # the command is split into words, as the Dockerfile's RUN does
$command
echo "docker context build passed"
