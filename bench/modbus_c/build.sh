#!/usr/bin/env bash
# Builds the libmodbus reference server and client into bench/modbus_c/build/.
# Installs Debian's libmodbus-dev and pkg-config first if they are missing (root only).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/build"

have_lib() {
    command -v pkg-config >/dev/null 2>&1 && pkg-config --exists libmodbus \
        && [ -f "$(pkg-config --variable=includedir libmodbus)/modbus/modbus.h" ]
}

if ! have_lib; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "build.sh: libmodbus-dev and pkg-config are missing; as root run:" >&2
        echo "    apt-get install -y libmodbus-dev pkg-config" >&2
        exit 1
    fi
    echo "build.sh: installing libmodbus-dev pkg-config" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q libmodbus-dev pkg-config >&2 \
        || { apt-get update -q >&2 && apt-get install -y -q libmodbus-dev pkg-config >&2; }
fi
command -v gcc >/dev/null 2>&1 || { echo "build.sh: gcc not found" >&2; exit 1; }

mkdir -p "$out"
read -r -a cflags <<<"$(pkg-config --cflags libmodbus)"
read -r -a libs <<<"$(pkg-config --libs libmodbus)"
for prog in server client; do
    if [ ! -x "$out/$prog" ] || [ "$here/$prog.c" -nt "$out/$prog" ]; then
        gcc -O2 -Wall -Wextra -o "$out/$prog" "$here/$prog.c" "${cflags[@]}" "${libs[@]}"
    fi
done
echo "$out"
