#!/usr/bin/env bash
# Removes what scripts/install.sh installed: the service (stopped and disabled), /opt/imds-tracer,
# /usr/local/bin/imds-tracer, /etc/systemd/system/imds-tracer.service, /etc/default/imds-tracer.
# The records in /var/log/imds-tracer are kept unless --purge-logs. System packages are kept.
# Idempotent: running it again, or on a machine without imds-tracer, does nothing.
#
#   bash scripts/uninstall.sh [--purge-logs] [--root DIR] [--no-systemctl]
#
# Options:
#   --purge-logs     also remove /var/log/imds-tracer (and /var/log/private/imds-tracer)
#   --root DIR       uninstall from under DIR instead of / (--prefix is the same)
#   --no-systemctl   do not call systemctl (also automatic when systemd is not running)
set -euo pipefail

say() { echo "uninstall.sh: $*"; }
die() { echo "uninstall.sh: $*" >&2; exit "${2:-1}"; }

ROOT=/
PURGE=0
SYSTEMCTL=1
while [ $# -gt 0 ]; do
  case "$1" in
    --purge-logs) PURGE=1; shift ;;
    --root|--prefix) [ $# -ge 2 ] || die "$1 needs a directory" 2; ROOT=$2; shift 2 ;;
    --root=*|--prefix=*) ROOT=${1#*=}; shift ;;
    --no-systemctl) SYSTEMCTL=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || [ "$ROOT" != / ] || die "run it as root: sudo bash scripts/uninstall.sh" 2
[ -d "$ROOT" ] || die "--root $ROOT is not a directory" 2
ROOT=$(cd "$ROOT" && pwd)
R=${ROOT%/}

UNIT=imds-tracer.service
if [ "$SYSTEMCTL" -eq 1 ] && command -v systemctl >/dev/null; then
  if [ "$ROOT" = / ] && [ -d /run/systemd/system ]; then
    if systemctl cat "$UNIT" >/dev/null 2>&1; then
      systemctl disable --now --quiet "$UNIT" || say "could not stop or disable $UNIT (continuing)"
    fi
  elif [ -e "$R/etc/systemd/system/$UNIT" ]; then
    systemctl --root="$ROOT" disable --quiet "$UNIT" 2>/dev/null || true
  fi
fi

remove() {
  local p
  for p in "$@"; do
    # $R is "" on a real root: guard the path itself (absolute, never "/" alone) instead of $R.
    case "$p" in /?*) ;; *) die "refusing to remove '$p'" ;; esac
    if [ -e "$R$p" ] || [ -L "$R$p" ]; then
      rm -rf -- "$R$p"
      say "removed $p"
    fi
  done
}

# Links `systemctl enable` made, should systemctl have been unavailable above.
remove /etc/systemd/system/multi-user.target.wants/$UNIT
remove /etc/systemd/system/$UNIT /etc/default/imds-tracer /usr/local/bin/imds-tracer /opt/imds-tracer
for leftover in "$R"/opt/.imds-tracer.* "$R"/opt/imds-tracer.old.*; do
  [ -e "$leftover" ] && remove "${leftover#"$R"}"
done

if [ -d "$R/etc/systemd/system/$UNIT.d" ]; then
  say "kept /etc/systemd/system/$UNIT.d (local drop-ins; remove it yourself if unwanted)"
fi
if [ "$SYSTEMCTL" -eq 1 ] && [ "$ROOT" = / ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl reset-failed "$UNIT" 2>/dev/null || true
fi

if [ "$PURGE" -eq 1 ]; then
  # With DynamicUser= systemd keeps the directory in /var/log/private and links it.
  remove /var/log/imds-tracer /var/log/private/imds-tracer
elif [ -e "$R/var/log/imds-tracer" ]; then
  say "kept the records in /var/log/imds-tracer (remove them with --purge-logs)"
fi
say "done"
