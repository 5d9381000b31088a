#!/usr/bin/env bash
# keeplb's UDP data plane beside nginx stream (UDP), one worker each, DNS-like: CLIENTS
# closed-loop clients, each with its own socket, send 32-byte queries through the proxy
# to two echo backends (round robin) and wait for each answer before the next query.
# Runs are interleaved (direct, nginx, keeplb, direct, ...); the table gives the median
# requests/s, lost queries, the proxy's CPU-seconds per 100k requests, and keeplb's
# ratios against nginx measured in the same run.
#
#   bench/proxy/udp.sh                       # 3 repetitions of 10 s, 50 clients
#   REPS=5 DUR=10 CLIENTS=200 bench/proxy/udp.sh
#
# As the anchor script: the load generator runs on CPU 0, backends and proxies on CPU 1.
# Needs root (installs nginx and its stream module with apt-get when missing). Loopback only.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
REPS=${REPS:-3}
DUR=${DUR:-10}
CLIENTS=${CLIENTS:-50}
COOLDOWN=${COOLDOWN:-2}
STREAM_MOD=/usr/lib/nginx/modules/ngx_stream_module.so
BE1=18181 BE2=18182 NGINX_PORT=18193 KEEPLB_PORT=19053

if ! command -v nginx >/dev/null || [[ ! -e $STREAM_MOD ]]; then
  apt-get install -y -q nginx libnginx-mod-stream >/dev/null
fi
cargo build --release --quiet -p keeplb --manifest-path "$root/Cargo.toml"
cargo build --release --quiet --bin udp --manifest-path "$root/bench/proxy/Cargo.toml"
keeplb=$root/target/release/keeplb
udp=$root/bench/proxy/target/release/udp

work=$(mktemp -d)
pids=()
declare -A pid=([direct]="")   # what each path's CPU is read from
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # name cmd... (on CPU 1)
  local name=$1; shift
  taskset -c 1 "$@" >"$work/$name.out" 2>&1 &
  pids+=("$!")
  pid[$name]=$!
}

cat >"$work/nginx.conf" <<CONF
load_module $STREAM_MOD;
worker_processes 1;
daemon off;
master_process on;
pid $work/nginx.pid;
error_log $work/nginx.error.log warn;
events { worker_connections 8192; }
stream {
  upstream be { server 127.0.0.1:$BE1; server 127.0.0.1:$BE2; }
  server {
    listen 127.0.0.1:$NGINX_PORT udp;
    proxy_pass be;
    proxy_timeout 60s;
  }
}
CONF
cat >"$work/keepalived.conf" <<CONF
virtual_server 127.0.0.1 $KEEPLB_PORT {
    lb_algo rr
    lb_kind NAT
    protocol UDP
    real_server 127.0.0.1 $BE1 {
    }
    real_server 127.0.0.1 $BE2 {
    }
}
CONF

start echo "$udp" echo $BE1 $BE2
start nginx nginx -e "$work/nginx.error.log" -p "$work" -c "$work/nginx.conf"
start keeplb env RUST_LOG=warn "$keeplb" run -f "$work/keepalived.conf" --workers 1 \
  --control "$work/keeplb.sock"
for port in $BE1 $NGINX_PORT $KEEPLB_PORT; do
  for _ in $(seq 1 100); do
    ss -lunH "sport = :$port" | grep -q . && break
    sleep 0.1
  done
  ss -lunH "sport = :$port" | grep -q . || { echo "port $port did not come up" >&2; exit 1; }
done

ticks() { # pid and its children -> utime + stime
  local total=0 pid f
  for pid in $1 $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    [[ -r /proc/$pid/stat ]] || continue
    f=$(sed 's/^.*) //' /proc/"$pid"/stat)
    set -- $f
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)

declare -A addr=([direct]=$BE1 [nginx]=$NGINX_PORT [keeplb]=$KEEPLB_PORT)
results=$work/results.txt
for rep in $(seq 1 "$REPS"); do
  for path in direct nginx keeplb; do
    before=0; [[ -n ${pid[$path]} ]] && before=$(ticks "${pid[$path]}")
    line=$(taskset -c 0 "$udp" load "127.0.0.1:${addr[$path]}" "$CLIENTS" "$DUR")
    after=0; [[ -n ${pid[$path]} ]] && after=$(ticks "${pid[$path]}")
    read -r _ requests _ lost _ _ _ rps <<<"$line"
    cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" \
      'BEGIN { printf "%.3f", n ? t / hz / n * 100000 : 0 }')
    echo "$path $rep $rps $lost $cpu" >>"$results"
    echo "[$(date +%H:%M:%S)] rep $rep $path: rps=$rps lost=$lost cpu/100k=${cpu}s" >&2
    sleep "$COOLDOWN"
  done
done

awk -v clients="$CLIENTS" '
  function median(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j > 0 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  { rps[$1] = rps[$1] " " $3; lost[$1] += $4; cpu[$1] = cpu[$1] " " $5 }
  END {
    printf "UDP, %d clients    %9s %8s %14s\n", clients, "rps(med)", "lost", "cpu s/100k(med)"
    split("direct nginx keeplb", order, " ")
    for (i = 1; i <= 3; i++) {
      p = order[i]
      printf "%-20s %9.0f %8d %14s\n", p, median(rps[p]), lost[p], (p == "direct") ? "-" : sprintf("%.3f", median(cpu[p]))
    }
    printf "keeplb / nginx: %.2fx requests/s, %.2fx CPU per request\n",
      median(rps["keeplb"]) / median(rps["nginx"]), median(cpu["keeplb"]) / median(cpu["nginx"])
  }' "$results"
