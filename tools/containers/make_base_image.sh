#!/usr/bin/env bash
# Make a Debian base image without a registry: mmdebstrap a minimal Debian into a tarball and
# import it. The mirror is the host's own (from /etc/apt/sources.list*), so the image is made
# from wherever this machine already installs its packages; no mirror host is written here.
#
#   tools/containers/make_base_image.sh [TAG] [SUITE]     (default: local/debian:trixie trixie)
#
# Needs root (or a working rootless podman), mmdebstrap and podman.
set -euo pipefail
tag="${1:-local/debian:trixie}"
suite="${2:-trixie}"
engine="${ENGINE:-podman}"

# The first Debian archive URI among the host's apt sources, one-line (deb URI suite ...) or
# deb822 (URIs: ...) format; security and third-party archives are skipped.
host_mirror() {
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    local f
    for f in "${files[@]}"; do
        [ -r "$f" ] || continue
        sed -nE -e 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?(https?:\/\/[^[:space:]]+)[[:space:]].*/\2/p' \
                -e 's/^[[:space:]]*URIs:[[:space:]]*(https?:\/\/[^[:space:]]+).*/\1/p' "$f"
    done | grep -E '/debian/?$' | head -n 1
}

mirror="${DEBIAN_MIRROR:-$(host_mirror || true)}"
if [ -z "$mirror" ]; then
    echo "make_base_image: no Debian archive in /etc/apt/sources.list*; set DEBIAN_MIRROR" >&2
    exit 2
fi
if "$engine" image exists "$tag" 2>/dev/null; then
    echo "make_base_image: $tag already exists"
    exit 0
fi
echo "make_base_image: $suite from $mirror -> $tag"
mmdebstrap --quiet --variant=minbase "$suite" - "$mirror" | "$engine" import - "$tag"
