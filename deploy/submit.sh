#!/usr/bin/env bash
# Submit the main job to a running Ray cluster, with this checkout as the job's working dir.
#
#   RAY_ADDRESS=http://127.0.0.1:8265 deploy/submit.sh --output /shared/runs --set members=5
#
# Arguments go to `ensemble run`. The cluster's token comes from RAY_AUTH_TOKEN, or the file
# named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token; without one the script refuses to run,
# because Ray 2.60 clusters keep token authentication on.
set -euo pipefail

fail() { echo "submit.sh: $*" >&2; exit 2; }

[[ -n "${RAY_ADDRESS:-}" ]] ||
    fail "set RAY_ADDRESS to the cluster's dashboard, e.g. http://127.0.0.1:8265 behind \`ray dashboard deploy/cluster.yaml\` or \`kubectl port-forward\`."

# Same precedence as Ray: the variable, then the file it names, then the default file.
if [[ -z "${RAY_AUTH_TOKEN:-}" ]]; then
    token_file="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
    [[ -s "$token_file" ]] ||
        fail "no Ray auth token: set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a token file, or put the cluster's token in ~/.ray/auth_token (\`ray get-auth-token\` prints it on the head). Refusing to submit without one."
    export RAY_AUTH_TOKEN_PATH="$token_file"   # Ray reads the file itself: the token stays off argv
fi
export RAY_AUTH_MODE=token

# A token sent over plain http to another machine travels in clear text.
if [[ "$RAY_ADDRESS" == http://* && ! "$RAY_ADDRESS" =~ ^http://(127\.0\.0\.1|localhost|\[::1\])(:|/|$) ]]; then
    echo "submit.sh: warning: $RAY_ADDRESS is plain http to a remote host; the token is not encrypted on the way. Prefer a tunnel to 127.0.0.1." >&2
fi

command -v ray >/dev/null || fail "the \`ray\` command is not on PATH; activate the environment that has ray[default] installed."

# The repository root is the working dir Ray uploads, whatever directory this was called from.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec ray job submit --address "$RAY_ADDRESS" --working-dir . --runtime-env deploy/runtime_env.yaml \
    -- python -m ensemble run "$@"
