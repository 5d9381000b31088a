#!/usr/bin/env bash
# keeplb's userspace proxy beside HAProxy (mode tcp) and nginx (stream), one worker each,
# through the team's anchor script: same backends, same wrk runs, interleaved, and the
# ratios printed against the anchors measured in the same run.
#
#   bench/proxy/run.sh                      # every workload, 3 repetitions of 10 s
#   REPS=1 DUR=5 bench/proxy/run.sh         # quicker
#   WORKLOADS="small-c50-ka:50:ok.txt:0" bench/proxy/run.sh
#
# Needs root (to install haproxy, nginx and wrk with apt-get when missing).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
anchors=${ANCHORS:-$root/../shared/tools/bench-anchors.sh}

missing=()
for tool in haproxy nginx wrk; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || missing+=(libnginx-mod-stream)
if ((${#missing[@]})); then
  apt-get install -y -q haproxy nginx libnginx-mod-stream wrk >/dev/null
fi

cargo build --release --quiet -p keeplb --manifest-path "$root/Cargo.toml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The anchor script's two backends, round robin, as its HAProxy and nginx configs do.
cat >"$work/keepalived.conf" <<CONF
virtual_server 127.0.0.1 19001 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 127.0.0.1 18081 {
    }
    real_server 127.0.0.1 18082 {
    }
}
CONF

export EXTRA_CMD="env RUST_LOG=warn $root/target/release/keeplb run -f $work/keepalived.conf --workers 1"
export EXTRA_TCP=127.0.0.1:19001
export PATHS=${PATHS:-"direct hap_tcp ngx_stream"}
exec "$anchors"
