# Shared by the benchmark scripts (sourced, not run): the machine's description and the
# server's lifetime. Needs $ROOT.

# The lines every result directory's machine.txt starts with.
describe_machine() {
  echo "date: $(date -Is)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) vCPU)"
  echo "kernel: $(uname -r)"
}

# The server of the current run; stopped between runs and when the script exits.
SERVER_PID=
stop_server() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
trap stop_server EXIT
