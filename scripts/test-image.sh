#!/usr/bin/env bash
# Builds (or reuses) the Docker image of a test "VPS": a Debian root with systemd as PID 1, made
# by debootstrap from the Debian mirror apt already uses here, imported with `docker import`.
# Nothing is pulled from a registry. The tests in tests/systemd_hosts.rs and tests/docker.rs
# run it; .ci/run runs it before the tests.
#
#   scripts/test-image.sh            # prints what it did; the last line is the image tag
#
# Idempotent, in this order: the image tag already in Docker → reuse it; the root tarball cached
# in target/test-image/ → import it; otherwise debootstrap (needs root and the debootstrap
# package), cache the tarball, import it. The tag is a hash of the recipe below, so a change to
# the recipe builds a new image. Env: CONSTELLA_TEST_IMAGE_CACHE (cache directory),
# CONSTELLA_TEST_MIRROR and CONSTELLA_TEST_SUITE (override what apt's sources say).
set -euo pipefail

say() { printf 'test-image: %s\n' "$*" >&2; }
die() { printf 'test-image: error: %s\n' "$*" >&2; exit 1; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${CONSTELLA_TEST_IMAGE_CACHE:-$REPO/target/test-image}

# The suite of this machine: the binaries cargo builds here link against its glibc, so the
# containers run the same Debian release.
suite=${CONSTELLA_TEST_SUITE:-}
if [[ -z $suite ]]; then
    # shellcheck disable=SC1091
    suite=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
fi
[[ -n $suite ]] || die "cannot tell the Debian suite from /etc/os-release; set CONSTELLA_TEST_SUITE"

# systemd as init; dbus for logind (`systemctl reboot` goes through it); iproute2 and procps to
# look around; openssh for `constella rolling-restart`'s default `ssh root@{host} …` commands.
# install.sh itself needs only what minbase has (bash, coreutils, util-linux, grep, sed).
readonly PACKAGES=systemd,systemd-sysv,dbus,iproute2,procps,openssh-server,openssh-client
# Units that make no sense in a container, or that would run at random moments during a test.
readonly MASKED_UNITS="systemd-udevd.service systemd-udev-trigger.service systemd-udevd-control.socket
systemd-udevd-kernel.socket console-getty.service getty@tty1.service apt-daily.timer
apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer
systemd-tmpfiles-clean.timer dpkg-db-backup.timer systemd-firstboot.service"
readonly RECIPE_VERSION=1

# The mirror apt uses for the main archive of $suite: deb822 .sources files first, then one-line
# lists. Security and third-party sources are skipped: only a URI ending in /debian serves it.
apt_mirror() {
    local file
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -f $file ]] || continue
        awk -v suite="$suite" '
            function flush() {
                if (uris != "" && (" " suites " ") ~ (" " suite " ") && (" " types " ") ~ / deb /) {
                    n = split(uris, u, " ")
                    for (i = 1; i <= n; i++) if (u[i] ~ /\/debian\/?$/) { print u[i]; found = 1; exit }
                }
                uris = ""; suites = ""; types = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^URIs:/ { sub(/^URIs:[ \t]*/, ""); uris = $0 }
            /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
            /^Types:/ { sub(/^Types:[ \t]*/, ""); types = $0 }
            END { if (!found) flush() }
        ' "$file"
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $file ]] || continue
        # deb [options] URI SUITE COMPONENTS…
        sed -e 's/\[[^]]*\]//' "$file" |
            awk -v suite="$suite" '$1 == "deb" && $3 == suite && $2 ~ /\/debian\/?$/ { print $2 }'
    done
}

mirror=${CONSTELLA_TEST_MIRROR:-}
if [[ -z $mirror ]]; then
    mirror=$(apt_mirror | head -n 1)
fi

recipe="v$RECIPE_VERSION $suite $PACKAGES $MASKED_UNITS"
hash=$(printf '%s' "$recipe" | sha256sum | cut -c1-12)
readonly TAG="constella-test-host:$hash"
readonly TARBALL="$CACHE/rootfs-$suite-$hash.tar"

command -v docker >/dev/null || die "the docker client is not installed"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || die "no Docker engine answers"

mkdir -p "$CACHE"
# One builder at a time (tests running in parallel may all ask for the image).
exec 9>"$CACHE/.lock"
flock 9

if docker image inspect "$TAG" >/dev/null 2>&1; then
    say "reusing image $TAG (already in Docker)"
    printf '%s\n' "$TAG"
    exit 0
fi

if [[ ! -f $TARBALL ]]; then
    [[ -n $mirror ]] || die "no Debian mirror for '$suite' in /etc/apt/sources*; set CONSTELLA_TEST_MIRROR"
    [[ $(id -u) -eq 0 ]] || die "debootstrap needs root (or put $TARBALL in place)"
    command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install -y debootstrap"
    work=$(mktemp -d "${TMPDIR:-/tmp}/constella-rootfs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    root="$work/root"
    say "debootstrap --variant=minbase $suite from $mirror (a few minutes; cached afterwards)"
    started=$(date +%s)
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$suite" "$root" "$mirror" \
        >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        die "debootstrap failed (log above)"
    fi
    for unit in $MASKED_UNITS; do
        ln -sf /dev/null "$root/etc/systemd/system/$unit"
    done
    # Each container makes its own machine id at boot.
    : >"$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id"
    # A VPS's root logs in with a key; the tests install one.
    mkdir -p "$root/root/.ssh"
    chmod 0700 "$root/root/.ssh"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar --numeric-owner -C "$root" -cf "$TARBALL.part" .
    mv "$TARBALL.part" "$TARBALL"
    rm -rf "$work"
    trap - EXIT
    say "built $TARBALL ($(du -h "$TARBALL" | cut -f1)) in $(($(date +%s) - started)) s"
else
    say "using the cached root $TARBALL"
fi

# (docker import takes no STOPSIGNAL: containers are run with --stop-signal SIGRTMIN+3, which
# systemd takes as "shut down cleanly".)
say "docker import → $TAG"
docker import \
    --change 'ENV container=docker' \
    --change 'CMD ["/sbin/init"]' \
    "$TARBALL" "$TAG" >/dev/null
# Older images of the recipe are no use any more.
docker image ls --format '{{.Repository}}:{{.Tag}}' constella-test-host |
    grep -vx "$TAG" | xargs -r docker image rm >/dev/null 2>&1 || true
printf '%s\n' "$TAG"
