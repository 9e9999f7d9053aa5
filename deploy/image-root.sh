#!/usr/bin/env bash
# The file tree of the pynbox image: the pynbox binary, the C libraries
# it links (found with ldd), a ready DEST, and the directories the server
# writes to, nothing else. Used by deploy/Dockerfile (inside the build
# stage) and by scripts/test-deploy.sh (which runs the tree under chroot).
#
#   deploy/image-root.sh PYNBOX DEST OUT
#
# OUT/usr/local/bin/pynbox, OUT/dest (a copy of DEST without its session
# store), OUT/tmp (1777), OUT/var/lib/pynbox (the session store's mount
# point), OUT/etc/pynbox/tokens (the tokens Secret's mount point).
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: deploy/image-root.sh PYNBOX DEST OUT" >&2
    exit 2
fi
pynbox=$1 dest=$2 out=$3
[ -x "$pynbox" ] || { echo "image-root.sh: $pynbox is not an executable" >&2; exit 1; }
[ -d "$dest/packages" ] || { echo "image-root.sh: $dest is not a pynbox install" >&2; exit 1; }

mkdir -p "$out/usr/local/bin" "$out/tmp" "$out/var/lib/pynbox" "$out/etc/pynbox/tokens"
chmod 1777 "$out/tmp"
install -m 0755 "$pynbox" "$out/usr/local/bin/pynbox"
# The install, read-only at run time: its saved sessions stay behind.
cp -a "$dest" "$out/dest"
rm -rf "$out/dest/sessions"
# The dynamic loader and libraries, at the paths the binary names
# (ldd prints "name => /path (addr)" and "/path/ld-linux... (addr)").
ldd "$pynbox" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
    while read -r lib; do
        mkdir -p "$out$(dirname "$lib")"
        cp -L "$lib" "$out$lib"
    done
