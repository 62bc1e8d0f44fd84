# Sourced by the bench scripts: waiting for a quiet machine before each scenario.
#   busy_percent  the share of the CPU in use over the next second, in percent
#   wait_quiet    waits (up to BENCH_QUIET_WAIT seconds, default 120) until the machine has
#                 been nearly idle for a second; the load tool reports what others took anyway

busy_percent() {
  local u1 n1 s1 i1 w1 q1 sq1 st1 u2 n2 s2 i2 w2 q2 sq2 st2
  read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ </proc/stat
  sleep 1
  read -r _ u2 n2 s2 i2 w2 q2 sq2 st2 _ </proc/stat
  local busy=$((u2 + n2 + s2 + q2 + sq2 + st2 - u1 - n1 - s1 - q1 - sq1 - st1)) idle=$((i2 + w2 - i1 - w1))
  echo $((100 * busy / (busy + idle + 1)))
}

wait_quiet() {
  local waited=0
  while [ "$(busy_percent)" -gt 10 ]; do
    [ $waited -lt "${BENCH_QUIET_WAIT:-120}" ] || { echo "machine still busy; measuring anyway" >&2; return; }
    sleep 4
    waited=$((waited + 5))
  done
}
