# Sourced by .ci/run and scripts/conformance-all (bash, set -euo pipefail in the caller).
# Starts a fresh `hewer dev` in the background, exports its HATCHET_CLIENT_* variables, and
# stops it (and its embedded PostgreSQL) again. Needs REPO set to the repository root.

HEWER_DEV_PID=""
HEWER_DEV_DIR=""

hewer_dev_start() {  # usage: hewer_dev_start [timeout_seconds]
  local timeout="${1:-60}" waited=0
  HEWER_DEV_DIR="$(mktemp -d /tmp/hewer-dev.XXXXXX)"
  chmod 755 "$HEWER_DEV_DIR"  # the embedded server runs as nobody when we are root
  "$REPO/.venv/bin/hewer" dev --data-dir "$HEWER_DEV_DIR/data" \
    >"$HEWER_DEV_DIR/stdout" 2>"$HEWER_DEV_DIR/stderr" &
  HEWER_DEV_PID=$!
  until [ "$(grep -c '^HATCHET_CLIENT_' "$HEWER_DEV_DIR/stdout" || true)" -ge 4 ]; do
    if ! kill -0 "$HEWER_DEV_PID" 2>/dev/null; then
      echo "hewer dev exited before it was ready; its stderr:" >&2
      tail -n 50 "$HEWER_DEV_DIR/stderr" >&2
      return 1
    fi
    if [ "$waited" -ge $((timeout * 10)) ]; then
      echo "hewer dev not ready after ${timeout}s; its stderr:" >&2
      tail -n 50 "$HEWER_DEV_DIR/stderr" >&2
      return 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  set -a
  # shellcheck disable=SC1090
  source <(grep '^HATCHET_CLIENT_' "$HEWER_DEV_DIR/stdout")
  set +a
  # The kit starts `python examples/worker.py` from its own copy; the worker imports the
  # package `examples`, so the kit's root (the current directory there) must be importable.
  export PYTHONPATH=.
  echo "hewer dev ready (pid $HEWER_DEV_PID): $HATCHET_CLIENT_HOST_PORT, $HATCHET_CLIENT_SERVER_URL" >&2
}

hewer_dev_stop() {
  if [ -n "$HEWER_DEV_PID" ] && kill -0 "$HEWER_DEV_PID" 2>/dev/null; then
    kill -TERM "$HEWER_DEV_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$HEWER_DEV_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$HEWER_DEV_PID" 2>/dev/null || true
    wait "$HEWER_DEV_PID" 2>/dev/null || true
  fi
  HEWER_DEV_PID=""
  if [ -n "$HEWER_DEV_DIR" ]; then
    # If the engine died hard, its PostgreSQL (a detached daemon) may still run.
    "$REPO/.venv/bin/python" -c 'import sys; from pathlib import Path
from hewer.engine.db.embedded import EmbeddedPostgres
EmbeddedPostgres(data_dir=Path(sys.argv[1])).stop()' "$HEWER_DEV_DIR/data/pg" 2>/dev/null || true
    rm -rf "$HEWER_DEV_DIR"
    HEWER_DEV_DIR=""
  fi
}

# junit_report FILE KIT: prints "passed failed skipped" on line 1, then one passing node id
# per line (relative to the conformance kit KIT).
junit_report() {
  "$REPO/.venv/bin/python" - "$1" "$2" <<'PYEOF'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

report, kit = Path(sys.argv[1]), Path(sys.argv[2])
passed, failed, skipped = [], 0, 0
if report.exists():
    for case in ET.parse(report).iter("testcase"):
        parts = case.get("classname", "").split(".")
        # classname is module path + optional class names: find the .py file it names
        for cut in range(len(parts), 0, -1):
            if (kit / Path(*parts[:cut])).with_suffix(".py").exists():
                node = "/".join(parts[:cut]) + ".py::" + "::".join([*parts[cut:], case.get("name", "")])
                break
        else:
            node = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed.append(node)
print(len(passed), failed, skipped)
for node in passed:
    print(node)
PYEOF
}
