#!/bin/bash
# Regenerates the golden files from the real ipvsadm 1.31 (Debian package) with
# fake_ipvs.so standing in for the kernel (table.txt), /proc/net/ip_vs_conn (conn.txt)
# and the resolver (hosts.txt). Run by hand, as root, from this
# directory: ./capture.sh   (needs gcc and libnl-3-200; keeplb's tests never run it)
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -Wall -shared -fPIC -o "$tmp/fake_ipvs.so" fake_ipvs.c /lib/x86_64-linux-gnu/libnl-3.so.200
export FAKE_IPVS_TABLE=$PWD/table.txt FAKE_IPVS_CONN=$PWD/conn.txt FAKE_IPVS_HOSTS=$PWD/hosts.txt
run() { # run ARGS...: ipvsadm with the fake kernel, stdin from $stdin
	LD_PRELOAD="$tmp/fake_ipvs.so" ipvsadm "$@" <"${stdin:-/dev/null}" >"$tmp/out" 2>"$tmp/err" && rc=0 || rc=$?
}
record() { # record FILE CASE: append one case's rc, stdout and stderr
	{
		printf '=== %s\n' "$2"
		printf 'rc %s\n--- stdout\n' "$rc"
		cat "$tmp/out"
		printf -- '--- stderr\n'
		cat "$tmp/err"
		printf -- '--- end\n'
	} >>"$1"
}
for file in listings errors; do
	: >"$file.out"
	while IFS= read -r line; do
		case "$line" in ''|'#'*) continue ;; esac
		errno=; stdin=
		words=$line
		if [[ $words == errno=* ]]; then errno=${words%% *}; errno=${errno#errno=}; words=${words#* }; fi
		if [[ $words == *' < '* ]]; then stdin=${words##* < }; words=${words% < *}; fi
		# shellcheck disable=SC2086
		FAKE_IPVS_ERRNO=$errno run $words
		record "$file.out" "$line"
	done <"$file.cases"
done
