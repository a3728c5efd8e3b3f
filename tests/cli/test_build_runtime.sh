#!/usr/bin/env bash
# test_build_runtime.sh -- the container recipe's build script (docker cannot run in
# CI): scripts/build-runtime.sh on the built binary must list every shared library
# the binary needs (ldd, checked here independently of the script's own check)
# except those the runtime base image provides, and docker/Dockerfile must copy
# exactly what the script assembles and run it as the worker by default.
set -euo pipefail
PAGELLM=${PAGELLM:-build/pagellm}
PAGELLM=$(cd "$(dirname "$PAGELLM")" && pwd)/$(basename "$PAGELLM")
SRC=${PL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail() { echo "test_build_runtime: $*" >&2; exit 1; }

PL_SKIP_BUILD=1 PAGELLM="$PAGELLM" "$SRC/scripts/build-runtime.sh" unused "$out/rt" >/dev/null
[ -x "$out/rt/bin/pagellm" ] || fail "no bin/pagellm"
grep -qx "bin/pagellm" "$out/rt/runtime-files.txt" || fail "bin/pagellm not listed"

# every listed file exists, every file present is listed
while read -r f; do [ -f "$out/rt/$f" ] || fail "listed $f missing"; done <"$out/rt/runtime-files.txt"
(cd "$out/rt" && find bin lib -type f | sort) >"$out/present"
sort "$out/rt/runtime-files.txt" >"$out/listed"
cmp -s "$out/present" "$out/listed" || fail "files and list differ: $(diff "$out/present" "$out/listed" | head -5)"

# ldd of the original binary: each dependency is either listed or a base-image library
base_prefixes=$(grep -v '^#' "$SRC/docker/base-libs.txt" | grep -v '^$')
n=0
while read -r soname; do
  n=$((n + 1))
  grep -qx "lib/$soname" "$out/rt/runtime-files.txt" && continue
  ok=0
  for p in $base_prefixes; do case "$soname" in "$p"*) ok=1 ;; esac; done
  [ "$ok" = 1 ] || fail "$soname (needed by pagellm) is neither in the runtime list nor in the base image"
done < <(ldd "$PAGELLM" | awk '{print $1}' | xargs -n1 basename)
[ "$n" -ge 5 ] || fail "ldd listed only $n libraries"
# the libraries this project links directly are shipped
for lib in libjansson libpcre2-8 libutf8proc libcurl libmicrohttpd; do
  grep -q "^lib/$lib\.so" "$out/rt/runtime-files.txt" || fail "$lib not shipped"
done
# the assembled tree runs on its own libraries
LD_LIBRARY_PATH="$out/rt/lib" "$out/rt/bin/pagellm" version | grep -q "^pagellm " || fail "assembled binary does not run"
! LD_LIBRARY_PATH="$out/rt/lib" ldd "$out/rt/bin/pagellm" | grep -q "not found" || fail "unresolved library"

# the Dockerfile uses the script and copies its output; worker by default, non-root
df="$SRC/docker/Dockerfile"
grep -q "scripts/build-runtime.sh /src/build /out" "$df" || fail "Dockerfile does not run build-runtime.sh"
grep -q "COPY --from=build /out/ /opt/pagellm/" "$df" || fail "Dockerfile does not copy /out"
grep -q "^USER pagellm" "$df" || fail "Dockerfile runs as root"
[ "$(grep '^FROM' "$df" | tail -1 | awk '{print $NF}')" = worker ] || fail "the default target is not the worker"
grep -q '^CMD \["pagellm", "worker"\]' "$df" || fail "worker command"
grep -q "AS server" "$df" || fail "no server target"
# a Hub model baked at build time: MODEL_NAME, the token only as a build secret, pagellm download
grep -q '^ARG MODEL_NAME=""' "$df" || fail "no MODEL_NAME build argument"
grep -q -- "--mount=type=secret,id=HF_TOKEN" "$df" || fail "HF_TOKEN is not a build secret"
grep -q 'pagellm download "$MODEL_NAME"' "$df" || fail "MODEL_NAME is not baked with pagellm download"
! grep -qE '^(ARG|ENV) HF_TOKEN' "$df" || fail "HF_TOKEN must not be an ARG or ENV (it would stay in the image)"
echo "test_build_runtime: ok ($(wc -l <"$out/rt/runtime-files.txt") files)"
