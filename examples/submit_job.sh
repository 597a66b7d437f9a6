#!/usr/bin/env bash
# The main job under `ray job submit`, tried end to end on one machine: start a Ray head on
# 127.0.0.1 with token authentication (as Ray 2.60 clusters run), submit `python -m ensemble run`
# to it, stream its output, and stop the head again.
#
#   bash examples/submit_job.sh                       # the default run (5 members on mnist-5k)
#   bash examples/submit_job.sh --tiny                # 2 members on 8 x 8 digits: a smoke run
#   bash examples/submit_job.sh --set members=3       # any `ensemble run` options
#   RAY_ADDRESS=http://127.0.0.1:8265 RAY_AUTH_TOKEN=... bash examples/submit_job.sh   # a cluster of yours
#
# With RAY_ADDRESS set, no head is started: the job goes to that cluster's dashboard address (for a
# remote cluster, through `ray dashboard deploy/cluster.yaml` or `kubectl port-forward`; deploy/submit.sh
# also checks the token and the address). Ray uploads the repository as the job's working dir, less
# what deploy/runtime_env.yaml excludes (runs, data, secrets). The run directory goes to ./runs/
# (an absolute path: the job runs in a copy of the repository that Ray uploads), unless --output says.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
args=("$@")
if [[ "${1:-}" == "--tiny" ]]; then
    args=("${@:2}" --set members=2 --set train.epochs=1 --set data.name=digits --set data.train_size=150
          --set data.val_size=60 --set data.test_size=150 --set "model.channels=[4, 8]" --set baseline.max_epochs=1)
fi
[[ " ${args[*]} " == *" --output "* ]] || args+=(--output "$PWD/runs")

if [[ -z "${RAY_ADDRESS:-}" ]]; then
    # A head of our own: loopback only, a fresh token, free ports (another Ray instance may hold the
    # defaults), its own temp dir. `--block` in a session of its own, so stopping it stops all of it.
    read -r gcs dashboard agent grpc metrics runtime_env < <(python - <<'PY'
import socket
sockets = [socket.socket() for _ in range(6)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in sockets])
PY
)
    temp_dir="$(mktemp -d /tmp/ray-XXXXXX)"  # short: Ray's unix sockets live under it
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$(python -c 'import secrets; print(secrets.token_hex(32))')"
    setsid ray start --head --block --node-ip-address=127.0.0.1 --port="$gcs" --num-cpus=2 \
        --dashboard-host=127.0.0.1 --dashboard-port="$dashboard" --dashboard-agent-listen-port="$agent" \
        --dashboard-agent-grpc-port="$grpc" --metrics-export-port="$metrics" \
        --runtime-env-agent-port="$runtime_env" --temp-dir="$temp_dir" --disable-usage-stats >/dev/null 2>&1 &
    head_pid=$!
    disown "$head_pid"  # its end is ours to report, not the shell's
    # Not `ray stop`: that would stop every Ray instance of this user on the machine.
    # `|| true`: under `set -e` a kill that finds the group already gone would end the script with 1
    stop_head() {
        kill -TERM -- "-$head_pid" 2>/dev/null || true
        for _ in 1 2 3 4 5; do kill -0 "$head_pid" 2>/dev/null || break; sleep 1; done
        kill -KILL -- "-$head_pid" 2>/dev/null || true
        rm -rf "$temp_dir"
        echo "stopped the Ray head"
    }
    trap stop_head EXIT
    export RAY_ADDRESS="http://127.0.0.1:$dashboard"
    echo "started a Ray head at $RAY_ADDRESS (token authentication on)"
    for _ in $(seq 45); do ray job list --address "$RAY_ADDRESS" >/dev/null 2>&1 && break; sleep 2; done
fi

# The job's entrypoint is the same command a local run uses: it connects to the cluster by itself.
log="$(mktemp)"
for _ in $(seq 20); do  # the head's job agent may still be starting: Ray answers "No available agent"
    status=0
    ray job submit --address "$RAY_ADDRESS" --working-dir "$root" --runtime-env "$root/deploy/runtime_env.yaml" \
        -- python -m ensemble run "${args[@]}" 2>&1 | tee "$log" || status=$?
    grep -q "No available agent" "$log" || break
    sleep 3
done
rm -f "$log"
exit "$status"
