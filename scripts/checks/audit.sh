#!/usr/bin/env bash
# Vulnerability gate: the locked dependency graph, and the vendored actix-http (a path crate,
# which cargo audit skips) under its crates.io name and version, against the RustSec advisory
# database. Fails on any advisory, and on any crate yanked from crates.io.
#
# The database: ADVISORY_DB when set; else the snapshot at ../shared/advisory-db beside the
# repository (or beside the local repository it was cloned from) when present (machines that cannot reach its git host; its SNAPSHOT.md says which
# commit), used as is (--no-fetch --stale); else cargo audit fetches the live one.
#
# Usage: scripts/checks/audit.sh      (needs cargo-audit; scripts/test.sh installs it)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# The snapshot beside this checkout, or beside the local repository it was cloned from (a CI
# clone in a scratch directory has no ../shared of its own).
db=${ADVISORY_DB:-}
origin=$(git config --get remote.origin.url 2>/dev/null || true)
for beside in . "$origin"; do
  if [ -z "$db" ] && [ -n "$beside" ] && [ -d "$beside/../shared/advisory-db/crates" ]; then
    db=$(cd "$beside/../shared/advisory-db" && pwd)
  fi
done
audit=(cargo audit --deny warnings)
if [ -n "$db" ]; then
  audit+=(--db "$db" --no-fetch --stale)
  echo "audit: advisory database $db (commit $(grep -o -m1 '[0-9a-f]\{40\}' "$db/SNAPSHOT.md" 2>/dev/null || echo 'unknown'))"
fi

"${audit[@]}"

# The vendored copy: a one-package lockfile naming it as the registry crate it was copied from.
version=$(awk '/^\[package\]/ { p = 1 } p && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' vendor/actix-http/Cargo.toml)
[ -n "$version" ] || { echo "audit: no version in vendor/actix-http/Cargo.toml" >&2; exit 1; }
lockdir=$(mktemp -d)
trap 'rm -rf "$lockdir"' EXIT
cat >"$lockdir/Cargo.lock" <<LOCK
version = 4

[[package]]
name = "actix-http"
version = "$version"
source = "registry+https://github.com/rust-lang/crates.io-index"
LOCK
# Without a fetch (the run above left the database in place, fetched or not), and without the
# yanked check: the crates.io index cache holds only what the build resolved, not this name.
[ -n "$db" ] || audit+=(--no-fetch)
"${audit[@]}" --no-yanked --file "$lockdir/Cargo.lock"
echo "audit: vendored actix-http $version checked as the crates.io release"
