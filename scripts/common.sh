# Sourced by the other scripts: small helpers they share.

# Once per shell: sourcing it again (kafka.sh and services.sh both do) must
# not forget the exit hooks registered so far.
if [ -n "${KAFKACTOR_COMMON_SH:-}" ]; then
    return 0
fi
KAFKACTOR_COMMON_SH=1

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Whether something accepts connections on 127.0.0.1:$1.
listening() {
    python3 -c "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close()" "$1" 2>/dev/null
}

# Runs "$@" at exit, after what was registered before (the scripts that
# source several of these helpers each register their own cleanup).
KAFKACTOR_EXIT_HOOKS=()
on_exit() {
    KAFKACTOR_EXIT_HOOKS+=("$*")
    trap run_exit_hooks EXIT
}
run_exit_hooks() {
    local i
    for ((i = ${#KAFKACTOR_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
        eval "${KAFKACTOR_EXIT_HOOKS[$i]}" || true
    done
}

# Seconds since the epoch, with milliseconds.
now() {
    date +%s.%N
}

# "1.23 s" between two `now` readings.
took() {
    python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" "$1" "$2"
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "need root to run: $*" >&2
        return 1
    fi
}

# Installs Debian packages (refreshing the package lists once if the first
# attempt fails, as on a machine whose lists are stale).
apt_install() {
    echo "installing Debian packages: $*"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; then
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
    fi
}

# Prints a warning that stands out in a long log.
loud() {
    printf '\n!!!!!!!!\n!!! %s\n!!!!!!!!\n\n' "$*" >&2
}
