# Sourced by the scripts in this folder.  Not executable on its own.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# One cargo target dir shared by scripts/up, scripts/test and the tests (which
# find berthd there); override to build elsewhere.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/berth-target}"
export BERTH_VENV="${BERTH_VENV:-/var/cache/berth-venv}"

if [ -t 1 ]; then BOLD=$'\e[1m'; RED=$'\e[31m'; GREEN=$'\e[32m'; RESET=$'\e[0m'; else BOLD=; RED=; GREEN=; RESET=; fi

section() { printf '\n%s==== %s ====%s\n' "$BOLD" "$*" "$RESET"; }
info()    { printf '%s\n' "$*"; }
warn()    { printf '%swarning:%s %s\n' "$RED" "$RESET" "$*" >&2; }
die()     { printf '%serror:%s %s\n' "$RED" "$RESET" "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "$1 must run as root (berthd manages mounts, cgroups and runc)"; }

# cargo may live in ~/.cargo/bin without being on PATH in a non-login shell.
find_cargo() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1
}
