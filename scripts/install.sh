#!/usr/bin/env bash
# Installs a Constella node on this server and starts it (see docs/operations.md).
#
#   scripts/install.sh init --server-name delta-01 --public-addr 203.0.113.10:4747 --owner @name
#   scripts/install.sh join --server-name echo-02 --join 'join://…'
#   scripts/install.sh restart
#   scripts/install.sh uninstall [--purge]
#
# Run it as root from a clone of the repository. Re-running it is safe: an existing network
# state is kept (and the binary and unit are updated) unless --force is given.
set -euo pipefail

readonly UNIT_NAME=constella.service

usage() {
    cat <<'EOF'
Usage:
  install.sh init --server-name NAME --public-addr HOST:PORT --owner @USERNAME [options]
  install.sh join --server-name NAME --join 'join://…' [--public-addr HOST:PORT] [options]
  install.sh restart [--prefix DIR]
  install.sh uninstall [--purge] [--prefix DIR]

Installs the constella binary to /usr/local/bin, keeps the node's state in /var/lib/constella
(0700, files 0600), creates the network (init) or joins one (join), and runs the node as the
systemd service constella.service, or, where systemd is not running (a container), as a
detached process logging to /var/lib/constella/logs.

Options for init and join:
  --server-name NAME     this server's name (a DNS label: delta-01)
  --public-addr H:P      the address other nodes reach this one at (init: required)
  --owner @USERNAME      Telegram username of the network's owner (init only, required)
  --join LINK            the link printed by `constella invite` on a member (join only, required)
  --priority N           leader priority; the alive node with the lowest number leads
  --listen H:P           where to listen [default: 0.0.0.0 and the port of --public-addr]
  --bot-token TOKEN      Telegram bot token (init only). Prefer the environment variable
                         CONSTELLA_BOT_TOKEN: command lines are readable by every local user.
  --binary PATH          install this binary instead of building target/release/constella
  --force                replace an existing network state (the old file is kept as a backup)
  --foreground           run the node in the foreground instead of as a service
  --prefix DIR           install under DIR instead of / (tests); env CONSTELLA_ROOT does the same
  -h, --help             show this help

restart restarts the installed node (systemctl restart, or SIGTERM and a new detached process);
`constella rolling-restart --restart-cmd 'ssh root@{host} …/install.sh restart'` uses it where
there is no systemd.

Options for uninstall:
  --purge                also delete /var/lib/constella (the node's key and network state)
EOF
}

# A usage error: nothing has been touched yet.
bad_usage() {
    printf 'install.sh: %s\n\n' "$*" >&2
    usage >&2
    exit 2
}
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }

# ---- arguments -------------------------------------------------------------------------------

[[ $# -gt 0 ]] || bad_usage "missing command (init, join, restart or uninstall)"
case "$1" in
    -h | --help) usage; exit 0 ;;
    init | join | restart | uninstall) ACTION=$1; shift ;;
    *) bad_usage "unknown command '$1' (expected init, join, restart or uninstall)" ;;
esac

SERVER_NAME="" PUBLIC_ADDR="" OWNER="" LINK="" PRIORITY="" LISTEN="" BINARY=""
BOT_TOKEN="${CONSTELLA_BOT_TOKEN:-}"
FORCE=0 FOREGROUND=0 PURGE=0
ROOT="${CONSTELLA_ROOT:-}"

# Options that take a value, by command.
takes_value() {
    case "$ACTION:$1" in
        init:--server-name | init:--public-addr | init:--owner | init:--priority | \
            init:--listen | init:--bot-token | init:--binary | init:--prefix) return 0 ;;
        join:--server-name | join:--public-addr | join:--join | join:--priority | \
            join:--listen | join:--binary | join:--prefix) return 0 ;;
        uninstall:--prefix | restart:--prefix) return 0 ;;
        *) return 1 ;;
    esac
}

while [[ $# -gt 0 ]]; do
    opt=$1
    shift
    value=""
    if [[ $opt == --*=* ]]; then
        value=${opt#*=}
        opt=${opt%%=*}
        takes_value "$opt" || bad_usage "option $opt takes no value here"
    elif takes_value "$opt"; then
        [[ $# -gt 0 ]] || bad_usage "option $opt needs a value"
        value=$1
        shift
    fi
    case "$ACTION:$opt" in
        *:-h | *:--help) usage; exit 0 ;;
        *:--server-name) SERVER_NAME=$value ;;
        *:--public-addr) PUBLIC_ADDR=$value ;;
        init:--owner) OWNER=$value ;;
        join:--join) LINK=$value ;;
        *:--priority) PRIORITY=$value ;;
        *:--listen) LISTEN=$value ;;
        init:--bot-token) BOT_TOKEN=$value ;;
        *:--binary) BINARY=$value ;;
        *:--prefix) ROOT=$value ;;
        init:--force | join:--force) FORCE=1 ;;
        init:--foreground | join:--foreground) FOREGROUND=1 ;;
        uninstall:--purge) PURGE=1 ;;
        *) bad_usage "unknown option '$opt' for $ACTION" ;;
    esac
done

# Checks that need no tool: everything else (name syntax, address syntax, link contents) is
# checked by `constella init/join` itself, before it writes anything.
host_port_re='^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$'
check_host_port() {
    [[ -z $2 || $2 =~ $host_port_re ]] || bad_usage "$1 must be HOST:PORT, e.g. 203.0.113.10:4747 (got '$2')"
}
if [[ $ACTION == init || $ACTION == join ]]; then
    [[ -n $SERVER_NAME ]] || bad_usage "missing --server-name"
    [[ $SERVER_NAME =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] ||
        bad_usage "--server-name must be 1-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen (got '$SERVER_NAME')"
    check_host_port --public-addr "$PUBLIC_ADDR"
    check_host_port --listen "$LISTEN"
    [[ -z $PRIORITY || $PRIORITY =~ ^[0-9]{1,9}$ ]] || bad_usage "--priority must be a number (got '$PRIORITY')"
fi
if [[ $ACTION == init ]]; then
    [[ -n $PUBLIC_ADDR ]] || bad_usage "missing --public-addr (the address other nodes reach this one at)"
    [[ -n $OWNER ]] || bad_usage "missing --owner (the Telegram username of the network's owner, e.g. @Rmgss)"
    [[ $OWNER =~ ^@[A-Za-z0-9_]{5,32}$ ]] || bad_usage "--owner must be @ followed by 5-32 letters, digits or _ (got '$OWNER')"
fi
if [[ $ACTION == join ]]; then
    [[ -n $LINK ]] || bad_usage "missing --join (the link printed by \`constella invite\` on a member)"
    link_re='^join://[^/?#]+:[0-9]{1,5}\?(.*&)?net=[^&]+'
    [[ $LINK =~ $link_re && $LINK == *token=* ]] ||
        bad_usage "malformed join link: expected join://HOST:PORT?net=…&token=…&ttl=…&peer=… as printed by \`constella invite\`"
fi
if [[ -n $ROOT ]]; then
    [[ $ROOT == /* ]] || bad_usage "--prefix must be an absolute path (got '$ROOT')"
    ROOT=${ROOT%/}
fi

readonly BIN_DIR="$ROOT/usr/local/bin"
readonly BIN="$BIN_DIR/constella"
readonly STATE_DIR="$ROOT/var/lib/constella"
readonly LOG_DIR="$STATE_DIR/logs"
readonly PID_FILE="$STATE_DIR/constella.pid"
readonly UNIT_DIR="$ROOT/etc/systemd/system"
readonly UNIT_FILE="$UNIT_DIR/$UNIT_NAME"

if [[ $(id -u) -ne 0 && -z $ROOT ]]; then
    die "run me as root (sudo $0 $ACTION …): I install to /usr/local/bin, /var/lib/constella and /etc/systemd/system"
fi

# systemd manages the node only on a real install on a host booted with systemd; under a
# --prefix the unit is written (for inspection and `systemd-analyze verify`) but not loaded.
use_systemd() {
    [[ -z $ROOT && -d /run/systemd/system ]] && command -v systemctl >/dev/null
}

# The command line that talks to this node (for the messages printed at the end).
ctl() {
    if [[ -n $ROOT ]]; then
        printf '%s --state-dir %s' "$BIN" "$STATE_DIR"
    else
        printf 'constella'
    fi
}

# ---- detached daemon (no systemd) ----------------------------------------------------------

# Whether process $1 exists and has not exited (a zombie waiting for its parent has).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# The pid of the running detached daemon, if the pid file names a live `constella run`.
detached_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'constella.* run' || return 1
    printf '%s' "$pid"
}

stop_detached() {
    local pid
    pid=$(detached_pid) || { rm -f "$PID_FILE"; return 0; }
    say "stopping the running node (pid $pid; SIGTERM: it says goodbye to its peers)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        alive "$pid" || break
        sleep 0.05
    done
    if alive "$pid"; then
        note "still running after 15 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
}

start_detached() {
    mkdir -p "$LOG_DIR"
    chmod 0700 "$LOG_DIR"
    : >>"$LOG_DIR/stdout.log"
    chmod 0600 "$LOG_DIR/stdout.log"
    # setsid + nohup: the node outlives this shell and the SSH session it runs in. Its logs go
    # to rotated files in $LOG_DIR; stdout.log only catches what is printed before logging starts.
    setsid nohup "$BIN" --state-dir "$STATE_DIR" run --log-dir "$LOG_DIR" \
        </dev/null >>"$LOG_DIR/stdout.log" 2>&1 &
    local pid=$!
    printf '%s\n' "$pid" >"$PID_FILE"
    chmod 0600 "$PID_FILE"
}

# Waits until the daemon answers on its control socket.
wait_until_up() {
    for _ in $(seq 1 300); do
        if "$BIN" --state-dir "$STATE_DIR" status >/dev/null 2>&1; then
            return 0
        fi
        if ! use_systemd && ! detached_pid >/dev/null; then
            break
        fi
        sleep 0.1
    done
    if use_systemd; then
        die "the node did not come up; see: journalctl -u constella -n 50"
    fi
    tail -n 20 "$LOG_DIR"/constella.*.log "$LOG_DIR/stdout.log" 2>/dev/null >&2 || true
    die "the node did not come up; its logs are in $LOG_DIR"
}

# ---- restart --------------------------------------------------------------------------------

if [[ $ACTION == restart ]]; then
    [[ -x $BIN ]] || die "constella is not installed at $BIN"
    [[ -f $STATE_DIR/network_state.json ]] || die "no network state in $STATE_DIR"
    if use_systemd; then
        systemctl restart "$UNIT_NAME"
    else
        stop_detached
        start_detached
    fi
    wait_until_up
    say "restarted the node (pid $(detached_pid || systemctl show -p MainPID --value "$UNIT_NAME"))"
    exit 0
fi

# ---- uninstall ------------------------------------------------------------------------------

if [[ $ACTION == uninstall ]]; then
    if use_systemd && [[ -f $UNIT_FILE ]]; then
        say "stopping and disabling $UNIT_NAME (SIGTERM: it says goodbye to its peers)"
        systemctl disable --now "$UNIT_NAME" 2>/dev/null || true
    fi
    stop_detached
    if [[ -f $UNIT_FILE ]]; then
        rm -f "$UNIT_FILE"
        say "removed $UNIT_FILE"
        if use_systemd; then systemctl daemon-reload; fi
    fi
    if [[ -e $BIN ]]; then
        rm -f "$BIN"
        say "removed $BIN"
    fi
    if ((PURGE)); then
        rm -rf "$STATE_DIR"
        say "removed $STATE_DIR (the node's key and network state)"
    elif [[ -d $STATE_DIR ]]; then
        say "kept $STATE_DIR (the node's key and network state; --purge deletes it)"
    fi
    exit 0
fi

# ---- the binary -----------------------------------------------------------------------------

REPO=$(cd "$(dirname "$0")/.." && pwd)

find_cargo() {
    if command -v cargo >/dev/null; then
        command -v cargo
    elif [[ -n $SUDO_HOME && -x $SUDO_HOME/.cargo/bin/cargo ]]; then
        printf '%s' "$SUDO_HOME/.cargo/bin/cargo"
    elif [[ -x ${HOME:-/nonexistent}/.cargo/bin/cargo ]]; then
        printf '%s' "$HOME/.cargo/bin/cargo"
    else
        return 1
    fi
}

SUDO_HOME=""
if [[ -n ${SUDO_USER:-} ]]; then
    SUDO_HOME=$(getent passwd "$SUDO_USER" | cut -d: -f6 || true)
fi

if [[ -n $BINARY ]]; then
    [[ -f $BINARY && -x $BINARY ]] || die "--binary $BINARY is not an executable file"
    SOURCE_BIN=$BINARY
elif cargo=$(find_cargo); then
    command -v cc >/dev/null || die "a C compiler is missing (some dependencies build C code); install it with:  apt-get install -y build-essential"
    say "building the release binary (a first build takes several minutes)"
    (cd "$REPO" && "$cargo" build --release --locked --bin constella)
    SOURCE_BIN="$REPO/target/release/constella"
elif [[ -x $REPO/target/release/constella ]]; then
    SOURCE_BIN="$REPO/target/release/constella"
    note "cargo not found; using the binary already built at $SOURCE_BIN"
else
    missing="cargo (Rust 1.95 or newer)"
    command -v cc >/dev/null || missing+=" and a C compiler"
    die "cannot build constella: missing $missing. Install with:
    apt-get install -y build-essential curl
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
and run me again (Debian's own cargo package is older than Rust 1.95), or build elsewhere
and pass --binary PATH."
fi
"$SOURCE_BIN" --version >/dev/null 2>&1 || die "$SOURCE_BIN does not run on this machine"

# ---- the network state ----------------------------------------------------------------------

# Stops whatever runs the node now, so state and binary can be replaced.
stop_node() {
    if use_systemd && systemctl is-active --quiet "$UNIT_NAME" 2>/dev/null; then
        say "stopping $UNIT_NAME"
        systemctl stop "$UNIT_NAME"
    fi
    stop_detached
}

created_state_dir=0
[[ -d $STATE_DIR ]] || created_state_dir=1
mkdir -p "$STATE_DIR"
chmod 0700 "$STATE_DIR"
if [[ -f $STATE_DIR/network_state.json ]]; then
    if ((FORCE)); then
        stop_node
        backup="$STATE_DIR/network_state.json.replaced-$(date -u +%Y%m%dT%H%M%SZ)"
        mv "$STATE_DIR/network_state.json" "$backup"
        say "--force: moved the existing network state to $backup (the node key is kept)"
    else
        say "$STATE_DIR already holds a network state: keeping it (--force replaces it)"
        note "updating the binary and the service, then restarting the node on its existing state"
        SKIP_SETUP=1
    fi
fi

if [[ -z ${SKIP_SETUP:-} ]]; then
    args=(--state-dir "$STATE_DIR" "$ACTION" --server-name "$SERVER_NAME")
    [[ -n $PUBLIC_ADDR ]] && args+=(--public-addr "$PUBLIC_ADDR")
    [[ -n $PRIORITY ]] && args+=(--priority "$PRIORITY")
    [[ -n $LISTEN ]] && args+=(--listen "$LISTEN")
    if [[ $ACTION == init ]]; then
        args+=(--owner "$OWNER")
        if [[ -n $BOT_TOKEN ]]; then
            if "$SOURCE_BIN" init --help 2>/dev/null | grep -q -- '--bot-token'; then
                # Through the environment, not argv: /proc/PID/cmdline is world-readable.
                export CONSTELLA_BOT_TOKEN="$BOT_TOKEN"
            else
                note "warning: this constella has no Telegram bot support yet; the bot token was NOT stored"
            fi
        fi
        say "creating the network ($SERVER_NAME)"
    else
        args+=(--join "$LINK")
        say "joining the network as $SERVER_NAME"
    fi
    if ! out=$("$SOURCE_BIN" "${args[@]}"); then
        if ((created_state_dir)); then rmdir "$STATE_DIR" 2>/dev/null || true; fi
        die "constella $ACTION failed (see the message above); nothing else was changed"
    fi
    # Its own "start the node with constella run" advice is what this script does next.
    printf '%s\n' "$out" | sed -e '/^Next: start the node/d' -e 's/ Start the node with: constella run$//'
    unset CONSTELLA_BOT_TOKEN
fi

# ---- binary and service ---------------------------------------------------------------------

stop_node
mkdir -p "$BIN_DIR"
install -m 0755 "$SOURCE_BIN" "$BIN.new"
mv -f "$BIN.new" "$BIN"
say "installed $BIN ($("$BIN" --version))"

mkdir -p "$UNIT_DIR"
cat >"$UNIT_FILE.new" <<EOF
# Written by constella's scripts/install.sh; see docs/operations.md.
[Unit]
Description=Constella node (peer-to-peer VPS network)
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=0

[Service]
Type=simple
# Root, but confined: the bounding set below leaves root only CAP_SYS_BOOT, and the file system
# is read-only but for $STATE_DIR. Root rather than a system user because the bot's reboot is
# \`systemctl reboot\` (a clean shutdown of every service), which logind grants to uid 0; an
# unprivileged user with CAP_SYS_BOOT could only call reboot(2), which skips that shutdown.
User=root
Environment=CONSTELLA_STATE_DIR=$STATE_DIR
ExecStart=$BIN run
# SIGTERM: the node says goodbye to its peers (they re-elect at once), then exits within ~1 s.
KillSignal=SIGTERM
TimeoutStopSec=20
Restart=always
RestartSec=2
# Descriptors: the swarm bounds its connections (about 1,700 at most: docs/design.md), far
# below this; the default soft limit of 1024 was not.
LimitNOFILE=65536
# Logs go to the journal: journalctl -u constella. Change the level with
# \`systemctl edit constella\` and Environment=RUST_LOG=debug.

# The one privilege it keeps, for the bot's "reboot" button (systemctl reboot; reboot(2) if that fails).
AmbientCapabilities=CAP_SYS_BOOT
CapabilityBoundingSet=CAP_SYS_BOOT
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
ReadWritePaths=$STATE_DIR
UMask=0077

[Install]
WantedBy=multi-user.target
EOF
mv -f "$UNIT_FILE.new" "$UNIT_FILE"
chmod 0644 "$UNIT_FILE"
say "wrote $UNIT_FILE"

if ((FOREGROUND)); then
    say "running the node in the foreground (Ctrl-C or SIGTERM stops it)"
    exec "$BIN" --state-dir "$STATE_DIR" run
fi

if use_systemd; then
    systemctl daemon-reload
    systemctl enable --quiet "$UNIT_NAME"
    systemctl restart "$UNIT_NAME"
    say "started $UNIT_NAME (logs: journalctl -u constella -f)"
else
    if [[ -z $ROOT ]]; then
        say "systemd is not running here (a container?): starting the node as a detached process"
    else
        say "installing under $ROOT: starting the node as a detached process (the unit is not loaded)"
    fi
    start_detached
    note "pid $(<"$PID_FILE") (in $PID_FILE); logs in $LOG_DIR, rotated daily and at 10 MiB"
fi
wait_until_up

echo
"$BIN" --state-dir "$STATE_DIR" status
echo
if [[ $ACTION == init ]]; then
    cat <<EOF
Next: add servers. On this server, print a one-time link:
    $(ctl) invite --ttl 15m
then on the new server, from a clone of the repository:
    sudo scripts/install.sh join --server-name NAME --join 'LINK'
EOF
else
    cat <<EOF
Next: check the network from any node:
    $(ctl) peers
EOF
fi
