#!/usr/bin/env bash
# Verify systemd/supervisord-lite.service under a real systemd (PID 1 in a
# systemd-nspawn box, ../shared/tools/systemd-box beside the repository), the way
# it runs at boot.
#
#   tests/systemd/verify.sh            # needs root; the first run downloads a
#                                      # minimal Debian (~1 min), later ones reuse it
#
# It binds this checkout, the virtualenv and the Python install behind it into the
# box at the same paths, installs the unit unchanged plus a drop-in that points
# it at the virtualenv (tests/systemd/10-venv.conf), and the test config
# (tests/systemd/box.yaml: tests/apps/testapp.py as cache, web primary+backup with
# BOOT_DELAY=2, and a worker) as /etc/supervisord-lite/supervisord-lite.yaml.
# Then it checks, printing one PASS/FAIL line each:
#   the unit verifies; a bad config fails `systemctl start` fast (ExecStartPre
#   --check); `systemctl start` returns only once every app is RUNNING; STATUS=
#   shows in `systemctl status`; the watchdog is set and pinged; `systemctl
#   reload` applies a changed config (hot swap) and rejects a broken one; an app
#   killed with SIGKILL is respawned; logrotate's USR1 reaches only the daemon;
#   under steady HTTP load on web (tests/systemd/httpload.py, from the host: the
#   box shares its network), a daemon killed with SIGKILL is restarted by systemd
#   and re-adopts its apps (KillMode=process): zero failed requests, every app pid
#   and listening socket unchanged, the sockets and output pipes taken back from
#   systemd's fd store (pidfd_getfd, the fallback, is blocked by the container's
#   seccomp filter); an adopted app killed with SIGKILL is respawned on the same
#   socket and serves; `systemctl restart` works with the fd store populated; a
#   hung daemon is caught by the watchdog and restarted, its apps again untouched
#   and serving; `systemctl stop` stops the apps in dependency order and leaves no
#   app process.
# Exits 0 when everything passed, 1 otherwise. The box is powered off at the end
# if this script booted it (KEEP_BOX=1 keeps it up), and what was installed in it
# is removed (its root file system is cached between runs).
#
# Env: SYSTEMD_BOX (the tool), VENV (default: .venv of this checkout), LOAD_RATE
# (requests/s of the HTTP load, default 200).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
MAIN=$(cd "$HERE/../.." && pwd)
BOX=${SYSTEMD_BOX:-$MAIN/../shared/tools/systemd-box}
VENV=${VENV:-$MAIN/.venv}
UNIT=supervisord-lite.service
CONF=/etc/supervisord-lite/supervisord-lite.yaml
APP_MATCH="$MAIN/tests/apps/testapp.py"

failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
info() { echo "      $*"; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }

# Run a command inside the box with a clean environment (nsenter would pass ours).
bx() { "$BOX" exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
supctl() { bx "$VENV/bin/supctl" "$@"; }
# bkill SIGNAL PID: signal one process of the box, never 0, 1 or a process group
# (`kill -STOP 0` from here would stop this script's own process group).
bkill() {
  case "$2" in ''|*[!0-9]*|0|1) echo "      (not sending SIG$1 to pid '$2')"; return 1;; esac
  bx kill "-$1" "$2"
}
# After a failed check: make sure no app is left over from it (KillMode=process
# leaves the apps of a dead daemon running) and the unit runs afresh, so that the
# next checks still mean something.
restart_afresh() {
  bx systemctl stop "$UNIT" >/dev/null 2>&1
  bx systemctl kill --kill-whom=all --signal=KILL "$UNIT" >/dev/null 2>&1
  sleep 0.5
  bx systemctl reset-failed "$UNIT" >/dev/null 2>&1
  bx systemctl start "$UNIT"
}

# The state of every instance, one "app:instance STATE PID" line each.
instances() {
  supctl --json status 2>/dev/null | "$VENV/bin/python" "$HERE/boxjson.py" instances
}
pid_of() { instances | awk -v k="$1" '$1 == k {print $3}'; }
all_running() { local out; out=$(instances) && [ -n "$out" ] && ! echo "$out" | grep -qv " RUNNING "; }
# App processes in the box (its own pid namespace: only the box's processes).
app_pids() { bx ps -eo pid=,args= | grep -F "$APP_MATCH" | grep -v grep | awk '{print $1}' | sort -n | tr '\n' ' '; }
show() { bx systemctl show -p "$1" --value "$UNIT"; }
# wait_for SECONDS CMD...: poll CMD until it succeeds or the deadline passes.
wait_for() {
  local deadline; deadline=$(python3 -c "import time,sys; print(time.time() + float(sys.argv[1]))" "$1"); shift
  while ! "$@"; do
    python3 -c "import time,sys; sys.exit(time.time() < float(sys.argv[1]))" "$deadline" && return 1
    sleep 0.2
  done
}
# The journal: mark a point, then read the unit's lines after it.
journal_mark() { bx journalctl -n 1 --show-cursor --no-pager -o cat | sed -n 's/^-- cursor: //p'; }
journal_after() { bx journalctl -u "$UNIT" --after-cursor "$1" --no-pager -o cat; }
# How many of the daemon's JSON log lines after cursor $1 have event $2.
events() { journal_after "$1" | grep -c "\"event\": *\"$2\""; }
# The inode of the socket listening on 127.0.0.1:PORT (the box shares our network
# namespace, so /proc/net/tcp here lists its sockets): the same inode before and
# after means the very same socket, not a new one bound to the same port.
listen_inode() {
  python3 - "$1" <<'PY'
import sys
port = f"{int(sys.argv[1]):04X}"
for line in list(open("/proc/net/tcp"))[1:]:
    f = line.split()
    if f[1] == f"0100007F:{port}" and f[3] == "0A":
        print(f[9])
PY
}
web_inodes() { echo "$(listen_inode 18401)/$(listen_inode 18402)"; }

# Steady HTTP load on web (both instances), from the host, in the background.
LOAD_DIR=""
LOAD_PID=""
LOAD_RATE=${LOAD_RATE:-200}
load_start() {  # load_start NAME
  LOAD_NAME=$1
  [ -n "$LOAD_DIR" ] || LOAD_DIR=$(mktemp -d)
  rm -f "$LOAD_DIR/stop" "$LOAD_DIR/$1.json"
  "$VENV/bin/python" "$HERE/httpload.py" --rate "$LOAD_RATE" --max-seconds 120 --timeout 2 \
    --out "$LOAD_DIR/$1.json" --stop "$LOAD_DIR/stop" \
    http://127.0.0.1:18401/ http://127.0.0.1:18402/ >/dev/null 2>"$LOAD_DIR/$1.err" &
  LOAD_PID=$!
}
# load_stop: end the load; sets LOAD_OK, LOAD_FAILED, LOAD_SECONDS, LOAD_ERRORS, LOAD_PIDS.
load_stop() {
  touch "$LOAD_DIR/stop"
  wait "$LOAD_PID" 2>/dev/null
  LOAD_PID=""
  local out=$LOAD_DIR/$LOAD_NAME.json
  if [ ! -s "$out" ]; then
    LOAD_OK=0; LOAD_FAILED=unknown; LOAD_SECONDS=0; LOAD_PIDS=""
    LOAD_ERRORS="httpload.py wrote no result: $(tail -3 "$LOAD_DIR/$LOAD_NAME.err")"
    return
  fi
  eval "$(python3 - "$out" <<'PY'
import json, shlex, sys
r = json.load(open(sys.argv[1]))
pids = " ".join(f"{u.split(':')[-1].strip('/')}:{','.join(map(str, p))}" for u, p in r["pids"].items())
for k, v in (("OK", r["ok"]), ("FAILED", r["failed"]), ("SECONDS", r["seconds"]),
             ("ERRORS", "; ".join(r["errors"])), ("PIDS", pids)):
    print(f"LOAD_{k}={shlex.quote(str(v))}")
PY
)"
}

install_config() {  # install_config FILE: the test config, placeholders filled in
  sed -e "s#@MAIN@#$MAIN#g" -e "s#@VENV@#$VENV#g" "$1" | bx sh -c "mkdir -p /etc/supervisord-lite && cat > $CONF"
}

# ---------------------------------------------------------------- the box
[ "$(id -u)" = 0 ] || { echo "FAIL: verify.sh needs root (systemd-nspawn)"; exit 1; }
[ -x "$VENV/bin/supervisord-lite" ] || { echo "FAIL: no $VENV/bin/supervisord-lite (set VENV)"; exit 1; }
BASE=$("$VENV/bin/python" -c 'import sys; print(sys.base_prefix)')
PKG=$("$VENV/bin/python" -c 'import os, supervisord_lite as m; print(os.path.dirname(os.path.dirname(m.__file__)))')
binds=("$MAIN")
for d in "$(readlink -f "$VENV")" "$BASE" "$PKG"; do
  case "$d/" in "$MAIN"/*) ;; *) binds+=("$d");; esac
done

booted=0
if "$BOX" status >/dev/null 2>&1; then
  echo "      systemd-box already up: reusing it (and leaving it up)"
else
  t0=$(now)
  "$BOX" up "${binds[@]}" || { echo "FAIL: systemd-box up"; exit 1; }
  booted=1
  info "box booted in $(elapsed "$t0" "$(now)") s (binds: ${binds[*]})"
fi

cleanup() {
  if [ -n "$LOAD_PID" ]; then touch "$LOAD_DIR/stop"; wait "$LOAD_PID" 2>/dev/null; fi
  [ -z "$LOAD_DIR" ] || rm -rf "$LOAD_DIR"
  bx systemctl stop "$UNIT" >/dev/null 2>&1
  # apps a failed check left behind (KillMode=process: a stop does not reach them)
  bx systemctl kill --kill-whom=all --signal=KILL "$UNIT" >/dev/null 2>&1
  bx rm -rf /etc/systemd/system/$UNIT /etc/systemd/system/$UNIT.d /etc/supervisord-lite \
    /run/supervisord-lite >/dev/null 2>&1
  bx systemctl daemon-reload >/dev/null 2>&1
  bx systemctl reset-failed "$UNIT" >/dev/null 2>&1
  if [ "$booted" = 1 ] && [ "${KEEP_BOX:-0}" != 1 ]; then "$BOX" down; fi
}
trap cleanup EXIT

if bx "$VENV/bin/python" -c 'import supervisord_lite.daemon' 2>/dev/null; then
  pass "the box's python runs the package ($VENV/bin/python, base $BASE)"
else
  fail "the box cannot import supervisord_lite with $VENV/bin/python"; exit 1
fi

# ---------------------------------------------------------------- install
bx systemctl stop "$UNIT" >/dev/null 2>&1
bx sh -c "cat > /etc/systemd/system/$UNIT" < "$MAIN/systemd/$UNIT"
bx mkdir -p "/etc/systemd/system/$UNIT.d"
sed "s#@VENV@#$VENV#g" "$HERE/10-venv.conf" | bx sh -c "cat > /etc/systemd/system/$UNIT.d/10-venv.conf"
install_config "$HERE/box.yaml"
bx systemctl daemon-reload

verify_out=$(bx systemd-analyze verify "$UNIT" 2>&1)
if [ -z "$verify_out" ]; then
  pass "systemd-analyze verify $UNIT: no warnings"
else
  fail "systemd-analyze verify $UNIT:"; echo "$verify_out" | sed 's/^/      /'
fi
info "ExecStart: $(show ExecStart | grep -o 'argv\[\]=[^;]*')"

# ---------------------------------------------------------------- bad config fails fast
echo "apps: {web: {command: [true], stop: {timeout: -1}}}" | bx sh -c "cat > $CONF"
t0=$(now)
bx systemctl start "$UNIT" 2>/dev/null; rc=$?
t=$(elapsed "$t0" "$(now)")
bad_log=$(bx journalctl -u "$UNIT" -n 20 --no-pager -o cat 2>/dev/null | grep -m1 "stop.timeout")
if [ "$rc" != 0 ] && python3 -c "import sys; sys.exit(float(sys.argv[1]) >= 5)" "$t" && [ -n "$bad_log" ]; then
  pass "a bad config fails systemctl start in ${t} s (rc $rc): $bad_log"
else
  fail "bad config: systemctl start rc $rc after ${t} s; journal: ${bad_log:-nothing about stop.timeout}"
fi
# Restart=on-failure retries a failed ExecStartPre too (every RestartSec, until
# StartLimitBurst): stop that loop so the next start is ours alone.
info "NRestarts=$(show NRestarts) ActiveState=$(show ActiveState) (Restart=on-failure retries until StartLimitBurst)"
bx systemctl stop "$UNIT" >/dev/null 2>&1
bx systemctl reset-failed "$UNIT" >/dev/null 2>&1
install_config "$HERE/box.yaml"
[ "$(show ActiveState)" = inactive ] || fail "the unit is $(show ActiveState) before the start test"

# ---------------------------------------------------------------- start waits for readiness
t0=$(now)
bx systemctl start "$UNIT"; rc=$?
t1=$(now)
status_now=$(instances)
t=$(elapsed "$t0" "$t1")
if [ "$rc" = 0 ] && [ -n "$status_now" ] && ! echo "$status_now" | grep -qv " RUNNING "; then
  if python3 -c "import sys; sys.exit(float(sys.argv[1]) < 2.0)" "$t"; then
    pass "systemctl start returned after ${t} s (web has BOOT_DELAY=2) with every instance RUNNING:"
  else
    fail "systemctl start returned after only ${t} s (< BOOT_DELAY=2): READY=1 sent too early?"
  fi
else
  fail "systemctl start rc $rc after ${t} s; instances right after it returned:"
fi
echo "$status_now" | sed 's/^/      /'
info "ActiveState=$(show ActiveState) SubState=$(show SubState) MainPID=$(show MainPID)"

# ---------------------------------------------------------------- per-instance cgroups
# Delegate=yes: the daemon moves itself into <unit's cgroup>/daemon and runs each
# generation of each instance in a cgroup of its own beside it.
cg=$(show ControlGroup)
cgmount=$(bx sh -c 'while read -r _ _ _ _ mnt rest; do case "$rest" in *" - cgroup2 "*) echo "$mnt";; esac; done < /proc/self/mountinfo' | head -1)
cgs=$(bx sh -c "ls $cgmount$cg; grep -c . $cgmount$cg/daemon/cgroup.procs" 2>&1 | tr '\n' ' ')
if echo "$cgs" | grep -q "daemon" && echo "$cgs" | grep -q "app.web.primary.g1" \
   && echo "$cgs" | grep -q "app.worker.primary.g1"; then
  pass "Delegate=yes: the daemon in $cgmount$cg/daemon, each instance in a cgroup of its own: $cgs"
else
  fail "no per-instance cgroups under $cg: $cgs"
fi

# ---------------------------------------------------------------- STATUS=
status_text=$(show StatusText)
status_line=$(bx systemctl status "$UNIT" --no-pager 2>/dev/null | grep -m1 'Status:')
if echo "$status_line" | grep -q 'Status: ".*apps, .*instances:.*RUNNING'; then
  pass "systemctl status shows the daemon's STATUS=: $(echo "$status_line" | sed 's/^ *//')"
else
  fail "systemctl status has no STATUS= summary (StatusText=$status_text; line: $status_line)"
fi

# ---------------------------------------------------------------- watchdog
wd=$(show WatchdogUSec)
wd_ts1=$(show WatchdogTimestampMonotonic)
if [ "$wd" = "30s" ]; then
  pass "watchdog set: WatchdogUSec=$wd"
else
  fail "WatchdogUSec=$wd (expected 30s)"
fi

# ---------------------------------------------------------------- logrotate's USR1
before=$(instances); main_before=$(show MainPID)
if bx systemctl kill --kill-whom=main --signal=USR1 "$UNIT" 2>/dev/null \
   || bx systemctl kill --kill-who=main --signal=USR1 "$UNIT"; then
  sleep 1
  after=$(instances)
  if [ "$before" = "$after" ] && [ "$(show MainPID)" = "$main_before" ] && [ "$(show ActiveState)" = active ]; then
    pass "logrotate's postrotate (systemctl kill --kill-whom=main -s USR1): daemon and apps untouched"
  else
    fail "USR1 changed something: before [$before] after [$after]"
  fi
else
  fail "systemctl kill --kill-whom=main -s USR1 failed"
fi

# ---------------------------------------------------------------- reload
web_before=$(pid_of web:primary); worker_before=$(pid_of worker:primary)
sed -e "s#@MAIN@#$MAIN#g" -e "s#@VENV@#$VENV#g" \
    -e 's#env: {PORT: "18421"}#env: {PORT: "18421", RELOADED: "1"}#' "$HERE/box.yaml" \
  | bx sh -c "cat > $CONF"
t0=$(now)
reload_out=$(bx systemctl reload "$UNIT" 2>&1); rc=$?
t=$(elapsed "$t0" "$(now)")
worker_after=$(pid_of worker:primary); web_after=$(pid_of web:primary)
if [ "$rc" = 0 ] && [ -n "$worker_after" ] && [ "$worker_after" != "$worker_before" ] \
   && [ "$web_after" = "$web_before" ] && all_running && [ "$(show ActiveState)" = active ]; then
  pass "systemctl reload (supctl update) in ${t} s: changed worker swapped (pid $worker_before -> $worker_after), web untouched (pid $web_after)"
else
  fail "systemctl reload rc $rc after ${t} s: worker $worker_before -> $worker_after, web $web_before -> $web_after; $reload_out"
  instances | sed 's/^/      /'
fi
echo "apps: {web: {command: [true], instances: 0}}" | bx sh -c "cat > $CONF"
before=$(instances)
reload_out=$(bx systemctl reload "$UNIT" 2>&1); rc=$?
if [ "$rc" != 0 ] && [ "$(instances)" = "$before" ] && [ "$(show ActiveState)" = active ]; then
  pass "systemctl reload with a broken config fails (rc $rc) and changes nothing; the service stays active"
else
  fail "reload of a broken config: rc $rc, ActiveState=$(show ActiveState); $reload_out"
fi
install_config "$HERE/box.yaml"
bx systemctl reload "$UNIT" >/dev/null 2>&1

# ---------------------------------------------------------------- an app killed -9 is respawned
victim=$(pid_of web:primary)
main_before=$(show MainPID)
t0=$(now)
bkill KILL "$victim"
respawned() { local p; p=$(pid_of web:primary); [ -n "$p" ] && [ "$p" != "$victim" ] && [ "$p" != None ] && all_running; }
if wait_for 20 respawned; then
  pass "kill -9 of web:primary (pid $victim): respawned as pid $(pid_of web:primary), RUNNING again after $(elapsed "$t0" "$(now)") s; daemon pid unchanged ($(show MainPID))"
else
  fail "web:primary (pid $victim) killed -9 was not respawned within 20 s"
  instances | sed 's/^/      /'
fi
[ "$(show MainPID)" = "$main_before" ] || fail "the daemon's MainPID changed after an app was killed"

# ---------------------------------------------------------------- watchdog pinged
sleep_more=$(python3 -c "import sys; print(max(0.0, 16 - (float(sys.argv[2]) - float(sys.argv[1]))))" "$t1" "$(now)")
sleep "$sleep_more"
wd_ts2=$(show WatchdogTimestampMonotonic)
if [ -n "$wd_ts1" ] && [ "$wd_ts2" != "$wd_ts1" ] && [ "$wd_ts2" != 0 ]; then
  pass "WATCHDOG=1 pings arrive (WatchdogTimestamp moved $(( (wd_ts2 - wd_ts1) / 1000 )) ms in >= 16 s)"
else
  fail "no watchdog ping seen (WatchdogTimestampMonotonic $wd_ts1 -> $wd_ts2)"
fi

# ---------------------------------------------------------------- the daemon dies: its apps keep serving
# KillMode=process: systemd kills only the daemon; the apps keep serving on their
# sockets, and the daemon systemd restarts re-adopts them from state.json, taking
# their sockets and output pipes back from the fd store (FDSTORE=1 / LISTEN_FDS).
# adoption_checks LABEL CURSOR STATUS_BEFORE PIDS_BEFORE INODES_BEFORE NRESTARTS_BEFORE:
# after a restart of the daemon, everything the apps had is unchanged.
adoption_checks() {
  local label=$1 cursor=$2 status_before=$3 pids_before=$4 inodes_before=$5 nr_before=$6
  local status_after pids_after inodes_after nr recovering adopted expected bad
  status_after=$(instances); pids_after=$(app_pids); inodes_after=$(web_inodes)
  nr=$(show NRestarts)
  if [ "$nr" = "$((nr_before + 1))" ]; then
    pass "$label: systemd restarted the daemon: MainPID $main_before -> $(show MainPID), NRestarts $nr_before -> $nr"
  else
    fail "$label: NRestarts $nr_before -> $nr (expected one automatic restart)"
  fi
  if [ "$status_after" = "$status_before" ] && [ "$pids_after" = "$pids_before" ] && all_running; then
    pass "$label: every app pid unchanged and RUNNING (supctl status before = after; app processes: $pids_after)"
  else
    fail "$label: the apps changed; supctl status before:"
    echo "$status_before" | sed 's/^/        /'
    echo "      after (app processes $pids_before -> $pids_after):"
    echo "$status_after" | sed 's/^/        /'
  fi
  if [ "$inodes_after" = "$inodes_before" ] && [ "$inodes_after" != "/" ]; then
    pass "$label: web's listening sockets are the same ones throughout (inodes $inodes_after)"
  else
    fail "$label: web's listening sockets changed: inodes $inodes_before -> $inodes_after"
  fi
  recovering=$(journal_after "$cursor" | grep -m1 '"recovering_after_crash"')
  adopted=$(events "$cursor" adopted)
  expected=$(echo "$status_before" | grep -c .)
  bad=$(journal_after "$cursor" | grep -E '"(adopt_fds_failed|evicting_unadoptable|not_adopted|adopted_orphan_stopped)"')
  if [ -n "$recovering" ] && [ "$adopted" = "$expected" ] && [ -z "$bad" ]; then
    pass "$label: journal: recovering_after_crash ($(echo "$recovering" | grep -o '"stored_fds": *[0-9]*')), $adopted/$expected instances adopted, sockets and pipes from the fd store (no adopt_fds_failed)"
  else
    fail "$label: journal: recovering_after_crash: ${recovering:-missing}; adopted $adopted of $expected; ${bad:-}"
  fi
}

main_before=$(show MainPID); nr_before=$(show NRestarts)
status_before=$(instances); pids_before=$(app_pids); inodes_before=$(web_inodes)
info "before: MainPID=$main_before NRestarts=$nr_before NFileDescriptorStore=$(show NFileDescriptorStore) web sockets (inodes) $inodes_before"
cursor=$(journal_mark)
failures_before=$failures
load_start crash
sleep 2
t0=$(now)
bkill KILL "$main_before"
restarted() { local m; m=$(show MainPID); [ "$m" != 0 ] && [ "$m" != "$main_before" ] && [ "$(show ActiveState)" = active ] && all_running; }
if wait_for 40 restarted; then
  t=$(elapsed "$t0" "$(now)")
  sleep 2  # the load goes on a while with the new daemon
  load_stop
  if [ "$LOAD_FAILED" = 0 ] && [ "$LOAD_OK" -gt 0 ]; then
    pass "kill -9 of the daemon (pid $main_before) under HTTP load: $LOAD_OK requests in $LOAD_SECONDS s, 0 failed; daemon back (pid $(show MainPID), all RUNNING) after $t s; web pids that answered: $LOAD_PIDS"
  else
    fail "kill -9 of the daemon under HTTP load: $LOAD_FAILED of $((LOAD_OK + ${LOAD_FAILED/unknown/0})) requests failed in $LOAD_SECONDS s: $LOAD_ERRORS"
  fi
  adoption_checks "daemon kill -9" "$cursor" "$status_before" "$pids_before" "$inodes_before" "$nr_before"
else
  load_stop
  fail "the daemon killed -9 was not restarted with its apps within 40 s (ActiveState=$(show ActiveState), MainPID=$(show MainPID)); load: $LOAD_OK ok, $LOAD_FAILED failed"
  instances | sed 's/^/      /'
  journal_after "$cursor" | grep -E '"(recovering_after_crash|adopted|adopt_fds_failed|evicting_unadoptable)"|Error|error:|in use' \
    | head -12 | sed 's/^/      journal: /'
  restart_afresh
fi

# ---------------------------------------------------------------- an adopted app killed -9 is respawned
# Its address is served from the socket the new daemon took back from the fd store:
# the respawned process must get that very socket and answer on it.
victim=$(pid_of web:primary)
inode_before=$(listen_inode 18401)
t0=$(now)
if [ "$failures" != "$failures_before" ]; then
  echo "SKIP: kill -9 of an adopted app: the daemon did not adopt its apps (see above)"
elif ! bkill KILL "$victim"; then
  fail "no web:primary pid to kill"
elif wait_for 20 respawned; then
  t=$(elapsed "$t0" "$(now)")
  new=$(pid_of web:primary)
  answer=$("$VENV/bin/python" -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' http://127.0.0.1:18401/ 2>&1)
  answered=$(echo "$answer" | python3 -c 'import json, sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null)
  if [ "$answered" = "$new" ] && [ "$(listen_inode 18401)" = "$inode_before" ]; then
    pass "kill -9 of adopted web:primary (pid $victim): respawned as pid $new after $t s, serves 127.0.0.1:18401 on the same socket (inode $inode_before)"
  else
    fail "adopted web:primary respawned as $new, but 127.0.0.1:18401 answered [$answer] (socket inode $inode_before -> $(listen_inode 18401))"
  fi
else
  fail "adopted web:primary (pid $victim) killed -9 was not respawned within 20 s"
  instances | sed 's/^/      /'
fi

# ---------------------------------------------------------------- systemctl restart
# A restart keeps systemd's fd store (a job is queued for the unit): the stored
# listening sockets stay open in systemd while the old daemon stops and the new
# one starts, so the new daemon must not trip over them (bind: address in use).
main_before=$(show MainPID); pids_before=$(app_pids)
t0=$(now)
restart_out=$(bx systemctl restart "$UNIT" 2>&1); rc=$?
t=$(elapsed "$t0" "$(now)")
pids_after=$(app_pids); common=""
for p in $pids_after; do case " $pids_before " in *" $p "*) common="$common $p";; esac; done
if [ "$rc" = 0 ] && [ "$(show MainPID)" != "$main_before" ] && all_running && [ -z "$common" ] && [ -n "$pids_after" ]; then
  pass "systemctl restart in ${t} s: new daemon (pid $main_before -> $(show MainPID)), its apps stopped and started afresh (app processes $pids_before -> $pids_after), all RUNNING"
else
  fail "systemctl restart rc $rc after ${t} s (ActiveState=$(show ActiveState), MainPID $main_before -> $(show MainPID)); app processes $pids_before -> ${pids_after:-none}${common:+ (survived:$common)}; $restart_out"
  bx journalctl -u "$UNIT" -n 60 --no-pager -o cat | grep -iE 'in use|error|failed' | head -5 | sed 's/^/      journal: /'
  restart_afresh
fi

# ---------------------------------------------------------------- a hung daemon: the watchdog fires
# A test-only drop-in shortens the watchdog (and the abort timeout, so the stopped
# process is SIGKILLed quickly instead of after TimeoutStopSec); SIGSTOP of the
# daemon stands for a hung event loop: no more WATCHDOG=1. The apps keep serving
# meanwhile, and the restarted daemon re-adopts them like after a crash.
printf '[Service]\nWatchdogSec=3\nTimeoutAbortSec=2\n' \
  | bx sh -c "cat > /etc/systemd/system/$UNIT.d/20-watchdog-test.conf"
bx systemctl daemon-reload
bx systemctl stop "$UNIT"
bx systemctl start "$UNIT"
main_before=$(show MainPID); nr_before=$(show NRestarts)
status_before=$(instances); pids_before=$(app_pids); inodes_before=$(web_inodes)
cursor=$(journal_mark)
load_start watchdog
sleep 1
t0=$(now)
bkill STOP "$main_before"
if wait_for 40 restarted; then
  t=$(elapsed "$t0" "$(now)")
  sleep 1
  load_stop
  wd_log=$(journal_after "$cursor" | grep -m1 -i "watchdog timeout")
  if [ -n "$wd_log" ] && [ "$LOAD_FAILED" = 0 ] && [ "$LOAD_OK" -gt 0 ]; then
    pass "hung daemon (SIGSTOP, WatchdogSec=3 for this test): \"$wd_log\", restarted as pid $(show MainPID) after $t s; HTTP load: $LOAD_OK requests in $LOAD_SECONDS s, 0 failed"
  else
    fail "hung daemon: watchdog log: ${wd_log:-none}; load: $LOAD_OK ok, $LOAD_FAILED failed: $LOAD_ERRORS"
  fi
  adoption_checks "watchdog restart" "$cursor" "$status_before" "$pids_before" "$inodes_before" "$nr_before"
else
  load_stop
  fail "a hung daemon (SIGSTOP) was not restarted by the watchdog within 40 s (ActiveState=$(show ActiveState))"
  bkill CONT "$main_before" 2>/dev/null
  restart_afresh
fi
bx rm -f "/etc/systemd/system/$UNIT.d/20-watchdog-test.conf"
bx systemctl daemon-reload

# ---------------------------------------------------------------- stop leaves nothing
pids_before=$(app_pids)
since=$(date +%s)
t0=$(now)
bx systemctl stop "$UNIT"; rc=$?
t=$(elapsed "$t0" "$(now)")
left=$(app_pids)
if [ "$rc" = 0 ] && [ -z "$left" ] && [ -n "$pids_before" ]; then
  pass "systemctl stop in ${t} s: no app process left in the box (were: $pids_before)"
else
  fail "systemctl stop rc $rc after ${t} s; app processes left: ${left:-none}; before: ${pids_before:-none}"
fi
if order=$(bx journalctl -u "$UNIT" --since "@$since" --no-pager -o cat | "$VENV/bin/python" "$HERE/boxjson.py" stop-order); then
  pass "the daemon stopped the apps itself, dependents first (KillMode=process): $order"
else
  fail "stop order: ${order:-no instance_state events in the journal}"
fi
result=$(show Result)
[ "$result" = success ] && pass "Result=$result after stop (clean exit, no SIGKILL by systemd)" \
  || fail "Result=$result after stop"

# ---------------------------------------------------------------- runtime directory preserved
if bx test -d /run/supervisord-lite; then
  pass "RuntimeDirectoryPreserve=yes: /run/supervisord-lite kept after stop ($(bx ls /run/supervisord-lite | tr '\n' ' '))"
else
  fail "/run/supervisord-lite is gone after stop"
fi

echo
if [ "$failures" = 0 ]; then echo "verify.sh: all checks passed"; exit 0; fi
echo "verify.sh: $failures check(s) failed"
bx journalctl -u "$UNIT" --no-pager -o cat -n 40 | sed 's/^/      journal: /'
exit 1
