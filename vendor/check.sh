#!/usr/bin/env bash
# Proves vendor/actix-http is upstream actix-http (the exact release Cargo.lock would
# name, by its crates.io checksum) plus vendor/actix-http.patch, and nothing else.
set -euo pipefail
cd "$(dirname "$0")"
here="$(pwd)"

version=3.11.2
sha256=7926860314cbe2fb5d1f13731e387ab43bd32bca224e82e6e2db85de0a3dba49
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

crate="$(ls ~/.cargo/registry/cache/*/actix-http-$version.crate 2>/dev/null | head -1 || true)"
if [ -z "$crate" ]; then
  crate="$work/actix-http-$version.crate"
  curl -sSfL --retry 3 -o "$crate" "https://static.crates.io/crates/actix-http/actix-http-$version.crate"
fi
echo "$sha256  $crate" | sha256sum --check --quiet
tar -xzf "$crate" -C "$work"
upstream="$work/actix-http-$version"
# Packaging files that are not source.
rm -f "$upstream/.cargo_vcs_info.json" "$upstream/Cargo.toml.orig" "$upstream/Cargo.lock"
(cd "$upstream" && git apply -p1 "$here/actix-http.patch")
if ! diff -r "$upstream" actix-http; then
  echo "vendor/actix-http differs from actix-http $version + actix-http.patch" >&2
  exit 1
fi
echo "vendor/actix-http is actix-http $version + actix-http.patch"
