#!/usr/bin/env bash
# Builds the pygmy-server image, pygmy-server:local, on a Docker host with
# no registry: pygmy-server is built by cargo on this host as one
# statically linked file (glibc's static libraries, crt-static), and the
# image is that file alone (deploy/Dockerfile.scratch, FROM scratch).
#
#   deploy/build-image.sh [TAG]        # default pygmy-server:local
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-pygmy-server:local}"
target="$(rustc -vV | sed -n 's/^host: //p')"

echo "== building pygmy-server for $target, statically linked"
# --target keeps build scripts and proc macros dynamic: only the binary is
# linked statically.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$target" -p pygmy-server --bin pygmy-server
binary="target/$target/release/pygmy-server"
if ldd "$binary" 2>&1 | grep -q "=>"; then
  echo "build-image: $binary is not static:" >&2
  ldd "$binary" >&2
  exit 1
fi

context=target/image
rm -rf "$context"
mkdir -p "$context/rootfs/var/lib/pygmy"
# Without its debug line tables: a smaller image.
strip -o "$context/rootfs/pygmy-server" "$binary"
cp deploy/Dockerfile.scratch "$context/Dockerfile"

echo "== building the image $tag"
docker build --quiet -t "$tag" "$context" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "image $tag: $((size / 1024 / 1024)) MiB ($size bytes), the binary alone"
