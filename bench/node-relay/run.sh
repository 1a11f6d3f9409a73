#!/bin/sh
# Starts the Node relay (installing its packages the first time), for
# `webex-push-load --server-bin bench/node-relay/run.sh`.
set -e
here="$(cd "$(dirname "$0")" && pwd)"
[ -d "$here/node_modules" ] || (cd "$here" && npm install --no-audit --no-fund --silent >&2)
exec node "$here/relay.js"
