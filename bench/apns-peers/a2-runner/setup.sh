#!/usr/bin/env bash
# Downloads a2 0.10.0 with cargo and writes a patched copy to ./a2-patched (see
# patch_a2.py for the two changes: endpoint host and extra CA, from the environment).
set -euo pipefail
cd "$(dirname "$0")"
(cd fetch && cargo fetch --quiet)
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/a2-0.10.0 | head -1)
rm -rf a2-patched
cp -r "$src" a2-patched
chmod -R u+w a2-patched
python3 patch_a2.py a2-patched/src/client.rs
# webpki-roots is already one of a2's dependencies (through hyper-rustls); name it.
python3 - <<'PY'
p = 'a2-patched/Cargo.toml'
s = open(p).read()
if 'dependencies.webpki-roots' not in s:
    s += '\n[dependencies.webpki-roots]\nversion = "0.26"\n'
open(p, 'w').write(s)
PY
echo "a2-patched ready"
