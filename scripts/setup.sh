#!/usr/bin/env bash
# Installs the host packages COLO needs on Debian 12 when they are missing (idempotent, root).
# The guest image builder fetches its own Debian packages (kernel, busybox, redis) later.
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v ip >/dev/null || need+=(iproute2)
command -v cpio >/dev/null || need+=(cpio)
command -v xz >/dev/null || need+=(xz-utils)
command -v zstd >/dev/null || need+=(zstd)
command -v dpkg-deb >/dev/null || need+=(dpkg)
[ -x /usr/sbin/mkfs.ext4 ] && [ -x /usr/sbin/e2fsck ] || need+=(e2fsprogs)
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "colo: missing packages (${need[*]}); run as root or install them" >&2
    exit 1
  fi
  echo "colo: installing ${need[*]} ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v dotnet >/dev/null; then
  echo "colo: the .NET 10 SDK (dotnet) is required" >&2
  exit 1
fi
