#!/bin/sh
# Re-run `keepalived -t` on every oracle fixture and report where keepalived's
# verdict no longer matches the fixture's first-line header.
#
# Usage: verify.sh [-v] [FIXTURE.conf ...]      (default: valid/*.conf invalid/*.conf)
#   -v   also print passing fixtures
# Environment:
#   KEEPALIVED=/path/to/keepalived   (default: keepalived from PATH, else /usr/sbin/keepalived)
#   KEEPLB_ORACLE_IN_NETNS=1         do not create a network namespace; eth0 and eth1 must
#                                    already exist and support multicast
#
# Header format (line 1, optional lines 2-3):
#   # keepalived -t: exit N: KEY MESSAGE      (KEY MESSAGE "(no output)" = stderr must be empty)
#   # keepalived-args: -i node1               (extra arguments for keepalived)
#   # note: ...
#
# The fixtures assume interfaces eth0 and eth1 exist (multicast-capable; no address needed),
# /bin/true exists and is owned by root, /nonexistent does not exist, and keepalived runs as
# uid 0. keepalived rejects `interface lo` and missing interfaces, so this script re-executes
# itself in a private network namespace (`unshare -n` as root, `unshare -rn` otherwise)
# holding a veth pair eth0/eth1. keepalived -t needs no other privileges; each run takes ~10 ms.
# Tested against keepalived 2.2.7 (Debian 12).
set -u

HERE=$(cd "$(dirname "$0")" && pwd)

if [ "${KEEPLB_ORACLE_IN_NETNS:-}" != 1 ]; then
    if [ "$(id -u)" = 0 ]; then
        KEEPLB_ORACLE_IN_NETNS=1 exec unshare -n sh "$HERE/verify.sh" "$@"
    else
        KEEPLB_ORACLE_IN_NETNS=1 exec unshare -rn sh "$HERE/verify.sh" "$@"
    fi
    echo "verify.sh: unshare failed" >&2
    exit 2
fi

if ! ip link show eth0 >/dev/null 2>&1; then
    ip link add eth0 type veth peer name eth1 || { echo "verify.sh: cannot create veth eth0/eth1" >&2; exit 2; }
fi

if [ -z "${KEEPALIVED:-}" ]; then
    KEEPALIVED=$(command -v keepalived 2>/dev/null || echo /usr/sbin/keepalived)
fi
if [ ! -x "$KEEPALIVED" ]; then
    echo "verify.sh: keepalived not found (set KEEPALIVED=...)" >&2
    exit 2
fi

verbose=0
if [ "${1:-}" = "-v" ]; then verbose=1; shift; fi
if [ $# -eq 0 ]; then
    set -- "$HERE"/valid/*.conf "$HERE"/invalid/*.conf
fi

total=0
bad=0
for f in "$@"; do
    total=$((total + 1))
    case "$f" in /*) ;; *) f="$PWD/$f" ;; esac
    rel=${f#"$HERE"/}
    header=$(head -n 1 "$f" | tr -d '\r')
    rest=${header#'# keepalived -t: exit '}
    if [ "$rest" = "$header" ]; then
        echo "BADHEADER $rel: first line must be '# keepalived -t: exit N: MESSAGE'"
        bad=$((bad + 1))
        continue
    fi
    want_rc=${rest%%:*}
    want_msg=${rest#*: }
    args=$(head -n 3 "$f" | tr -d '\r' | sed -n 's/^# keepalived-args: //p')

    case "$rel" in
        valid/*)   [ "$want_rc" = 0 ] || { echo "BADHEADER $rel: valid fixture must expect exit 0"; bad=$((bad + 1)); continue; } ;;
        invalid/*) [ "$want_rc" != 0 ] || { echo "BADHEADER $rel: invalid fixture must expect a non-zero exit"; bad=$((bad + 1)); continue; } ;;
    esac

    # -t writes its report to stderr; keep stdout out of the comparison.
    # shellcheck disable=SC2086
    # The outer 2>/dev/null swallows the shell's own "Segmentation fault" notice.
    {
        out=$(cd "$(dirname "$f")" && timeout 30 "$KEEPALIVED" -t $args -f "$f" 2>&1 >/dev/null)
        rc=$?
    } 2>/dev/null

    problem=""
    if [ "$rc" != "$want_rc" ]; then
        problem="exit $rc, expected $want_rc"
    fi
    if [ "$want_msg" = "(no output)" ]; then
        [ -z "$out" ] || problem="${problem:+$problem; }expected no output"
    else
        case "$out" in
            *"$want_msg"*) ;;
            *) problem="${problem:+$problem; }message not found: $want_msg" ;;
        esac
    fi

    if [ -n "$problem" ]; then
        bad=$((bad + 1))
        echo "MISMATCH $rel: $problem"
        [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/    | /'
    elif [ $verbose = 1 ]; then
        echo "ok       $rel (exit $rc)"
    fi
done

echo "$total fixtures checked, $bad mismatches ($("$KEEPALIVED" -v 2>&1 | head -n 1))"
[ $bad = 0 ]
