#!/usr/bin/env bash
# The test matrix (issue 10): the quick suite on every Python 3.10-3.13 found on the machine with
# the newest LangChain line, and a `compat` job on the oldest line the package accepts (the exact
# lower bounds of langchain-core and langgraph in pyproject's `test` extra). Each job has its own
# venv (.venv-py310 ... .venv-compat), installed with `.[test]`. Prints one summary line per job
# and exits non-zero if any job failed or ran no test; a missing interpreter is a printed skip.
#   MATRIX_PYTHONS  minor versions to try (default "3.10 3.11 3.12 3.13")
#   MATRIX_PARALLEL jobs run at once (default 2: one per core; the suite is single-process)
#   MATRIX_TIMEOUT  seconds per job, install included (default 900)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
PYTHONS="${MATRIX_PYTHONS:-3.10 3.11 3.12 3.13}"
PARALLEL="${MATRIX_PARALLEL:-2}"
JOB_TIMEOUT="${MATRIX_TIMEOUT:-900}"
LOGS="$(mktemp -d "${TMPDIR:-/tmp}/otel-callbacks-matrix.XXXXXX")"

# The newest pyenv interpreter for a minor version, else one on PATH that actually runs.
find_python() {
    local minor="$1" candidate
    for candidate in $(ls -d "$HOME"/.pyenv/versions/"$minor".*/bin/python 2>/dev/null | sort -V -r) \
                     "$(command -v "python$minor" 2>/dev/null)"; do
        if [ -n "$candidate" ] && "$candidate" -c \
            "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$minor'.split('.'))))" \
            >/dev/null 2>&1; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}

# The lower bound a requirement has in the `test` extra, e.g. lower_bound langchain-core -> 0.3.52
lower_bound() {
    sed -n '/^test = \[/,/^\]/p' pyproject.toml | sed -n "s/.*\"$1>=\([0-9][0-9.]*\)[,\"].*/\1/p" | head -1
}

# One job: fresh venv, `.[test]` (plus constraints), the quick suite. Writes its log and a
# one-line result ("<label>: <counts>") for the summary.
run_job() {
    local label="$1" python="$2" venv="$3" constraints="$4" log="$LOGS/$5.log" result="$LOGS/$5.result"
    local t0=$SECONDS rc=0 versions last counts
    (
        echo "[$label] $("$python" --version 2>&1) at $python -> $venv"
        "$python" -m venv --clear "$venv" || exit 3
        "$venv/bin/pip" install -q -e ".[test]" ${constraints:+-c "$constraints"} 2>&1 |
            { grep -v "is ignored: it is neither a file nor a directory" || true; }
        [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "[$label] pip install failed"; exit 3; }
        HYPOTHESIS_STORAGE_DIRECTORY="$venv/.hypothesis" "$venv/bin/python" -m pytest -q -rfE
    ) >"$log" 2>&1 || rc=$?
    versions="$("$venv/bin/python" -c "from importlib.metadata import version as v
print(f\"langchain-core {v('langchain-core')}, langgraph {v('langgraph')}\")" 2>/dev/null || echo "not installed")"
    # pytest's closing line, e.g. "1 failed, 195 passed, 7 skipped, 2 warnings in 62.89s"
    last="$(grep -E "^=* ?([0-9]+ (passed|failed|skipped|errors?|deselected|xfailed|xpassed|warnings?)(, )?)+ in |^=* ?no tests ran" "$log" | tail -1)"
    counts="$(awk '{ for (i = 2; i <= NF; i++) { w = $i; sub(/,$/, "", w); n[w] = $(i - 1) } }
        END { printf "%d passed, %d failed, %d skipped", n["passed"], n["failed"], n["skipped"]
              e = n["error"] + n["errors"]; if (e) printf ", %d errors", e }' <<<"$last")"
    if [ "$rc" -eq 0 ] && ! grep -qE "[1-9][0-9]* passed" <<<"$last"; then
        rc=5  # pytest's exit 5 (no test collected), or a run where nothing passed: not a pass
    fi
    case "$rc" in
        0) ;;
        5) counts="FAILED, ran no test: $counts" ;;
        3) counts="FAILED to install (see log)" ;;
        *) counts="FAILED (exit $rc): $counts" ;;
    esac
    echo "$label ($versions): $counts [$((SECONDS - t0)) s]" >"$result"
    echo "$rc" >"$result.rc"
}

jobs_started=()
start_job() {  # label python venv constraints id
    while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n || true; done
    echo "[matrix] start $1"
    export -f run_job
    LOGS="$LOGS" JOB_TIMEOUT="$JOB_TIMEOUT" timeout "$JOB_TIMEOUT" bash -c 'run_job "$@"' _ "$@" &
    jobs_started+=("$5|$1")
}

skips=()
oldest=""
for minor in $PYTHONS; do
    if python="$(find_python "$minor")"; then
        oldest="${oldest:-$python}"
        start_job "matrix py$minor langchain-latest" "$python" ".venv-py${minor/./}" "" "py${minor/./}"
    else
        skips+=("matrix py$minor langchain-latest: SKIPPED (no Python $minor under ~/.pyenv/versions or on PATH)")
    fi
done

core="$(lower_bound langchain-core)"
graph="$(lower_bound langgraph)"
if [ -z "$oldest" ] || [ -z "$core" ] || [ -z "$graph" ]; then
    skips+=("matrix compat: FAILED (no interpreter, or no langchain-core/langgraph lower bound in the test extra)")
    compat_broken=1
else
    # The oldest Python found with the exact lower bounds. LangGraph 0.4 accepts any newer
    # langgraph-prebuilt / -checkpoint, but prebuilt 1.x imports LangGraph 1.x internals:
    # pin what a LangGraph 0.4 install of its time has.
    cat >"$LOGS/compat-constraints.txt" <<EOF
langchain-core==$core
langgraph==$graph
langgraph-prebuilt<0.3
langgraph-checkpoint<3
EOF
    start_job "matrix $("$oldest" -c 'import sys; print("py%d.%d" % sys.version_info[:2])') compat" \
        "$oldest" ".venv-compat" "$LOGS/compat-constraints.txt" "compat"
fi
wait

failed=${compat_broken:-0}
for entry in "${jobs_started[@]}"; do
    id="${entry%%|*}"; label="${entry#*|}"
    rc="$(cat "$LOGS/$id.result.rc" 2>/dev/null || echo 124)"
    echo "== $label: log"
    if [ "$rc" -eq 0 ]; then tail -n 3 "$LOGS/$id.log"; else tail -n 60 "$LOGS/$id.log"; fi
    [ "$rc" -eq 0 ] || failed=1
done
echo "== matrix summary"
for entry in "${jobs_started[@]}"; do
    id="${entry%%|*}"; label="${entry#*|}"
    cat "$LOGS/$id.result" 2>/dev/null || echo "$label: FAILED (timed out after ${JOB_TIMEOUT}s)"
done
for line in "${skips[@]}"; do echo "$line"; done
exit "$failed"
