#!/usr/bin/env bash
# Proves that vendor/actix-http is exactly the crates.io release it names plus
# vendor/actix-http.patch, so the copy cannot drift by hand edits: downloads the release (cached
# under TOOLS_DIR), checks its SHA-256 against the crates.io index, keeps the files the vendored
# copy keeps (Cargo.toml, licences, src/), applies the patch with no fuzz and compares the result
# with the vendored directory, file for file. Then checks that the rust-version Cargo.toml declares
# is true: not older than any package's in the locked dependency graph (the vendored crate's
# included), the newest of which is the real minimum.
#
# Usage: scripts/checks/check-dependencies.sh
# Environment: TOOLS_DIR (default .tools in the repository).
# To change the vendored copy: edit a fresh copy of the release, regenerate the patch with
# `diff -ruN` (vendor/README.md, "Upgrading"), then copy the patched tree into vendor/actix-http.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
TOOLS_DIR=${TOOLS_DIR:-.tools}
VENDORED=vendor/actix-http
PATCH=vendor/actix-http.patch
KEPT=(Cargo.toml LICENSE-APACHE LICENSE-MIT src)

fail() { printf 'check-dependencies: %s\n' "$*" >&2; exit 1; }

# package_field FILE FIELD: the value of FIELD in FILE's [package] table.
package_field() {
  awk -v field="$2" '
    /^\[/ { in_package = ($0 == "[package]" || $0 == "[workspace.package]") }
    in_package && $1 == field { gsub(/"/, "", $3); print $3; exit }
  ' "$1"
}

name=actix-http
version=$(package_field "$VENDORED/Cargo.toml" version)
[ -n "$version" ] || fail "no version in $VENDORED/Cargo.toml"

cache="$TOOLS_DIR/vendor-check"
crate="$cache/$name-$version.crate"
mkdir -p "$cache"
if [ ! -s "$crate" ]; then
  curl -sSfL --retry 3 -o "$crate.part" "https://static.crates.io/crates/$name/$name-$version.crate"
  mv "$crate.part" "$crate"
fi

# The index is crates.io's record of each release's checksum (the one Cargo.lock pins for
# registry packages); a sparse-index line per version.
expected=$(curl -sSf --retry 3 "https://index.crates.io/ac/ti/$name" \
  | python3 -c 'import json, sys
version = sys.argv[1]
for line in sys.stdin:
    entry = json.loads(line)
    if entry["vers"] == version:
        print(entry["cksum"])' "$version")
[ -n "$expected" ] || fail "$name $version is not in the crates.io index"
actual=$(sha256sum "$crate" | cut -d' ' -f1)
[ "$actual" = "$expected" ] || fail "$crate has SHA-256 $actual, crates.io says $expected"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$crate" -C "$work"
mkdir "$work/expected"
for kept in "${KEPT[@]}"; do cp -R "$work/$name-$version/$kept" "$work/expected/"; done
patch -s -p1 --fuzz=0 --no-backup-if-mismatch -d "$work/expected" <"$PATCH" \
  || fail "$PATCH does not apply cleanly to $name $version"
if ! diff -r "$work/expected" "$VENDORED" >"$work/differences"; then
  cat "$work/differences" >&2
  fail "$VENDORED differs from $name $version + $PATCH (above); edit the patch, not the copy"
fi

declared=$(package_field Cargo.toml rust-version)
# The newest rust-version among the dependencies, and which one asks for it.
newest=$(cargo metadata --format-version 1 --locked | python3 -c 'import json, sys
def key(package):
    return tuple(int(part) for part in package["rust_version"].split("."))
metadata = json.load(sys.stdin)
members = set(metadata["workspace_members"])
packages = [p for p in metadata["packages"] if p.get("rust_version") and p["id"] not in members]
newest = max(packages, key=key)
print(newest["rust_version"], newest["name"])')
read -r newest_version newest_package <<<"$newest"
oldest=$(printf '%s\n%s\n' "$newest_version" "$declared" | sort -V | head -n1)
if [ "$oldest" != "$newest_version" ]; then
  fail "Cargo.toml declares rust-version $declared, but $newest_package needs $newest_version"
fi

printf 'check-dependencies: %s is %s %s + %s (%s lines); rust-version %s (newest in the graph: %s %s)\n' \
  "$VENDORED" "$name" "$version" "$PATCH" "$(wc -l <"$PATCH")" "$declared" "$newest_package" "$newest_version"
