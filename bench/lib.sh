# shellcheck shell=bash
# Shared by the bench scripts (sourced, not run).

# Prints the executable cargo built for target NAME, read from cargo's JSON messages on
# stdin: `cargo build --message-format=json ... | executable NAME`. It honours
# CARGO_TARGET_DIR, unlike a fixed target/ path.
executable() {
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1"
}
