#!/usr/bin/env bash
# test_install.sh -- the library as an outside program uses it:
#   1. `cmake --install` into a temporary prefix puts pagellm.h, libpagellm.so
#      (with its SONAME link), libpagellm.a and pkgconfig/pagellm.pc in place;
#   2. the shared library exports the PL_API functions and nothing else
#      (-fvisibility=hidden), and pagellm.h compiles on its own;
#   3. examples/c, copied out of the tree, builds with its Makefile against the
#      installed library (pkg-config), shared and STATIC=1, and each build
#      streams a request on the tiny model and checks it against generate;
#      the shared build loads the installed libpagellm.so.0.
# Env: PAGELLM (binary; the build directory is its directory), PL_SOURCE_DIR.
set -euo pipefail
src=${PL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${PAGELLM:?PAGELLM must point at the pagellm binary}
build=$(dirname "$bin")
if [ ! -e "$build/libpagellm.so" ]; then
  echo "SKIP: no shared library in this build (PL_BUILD_SHARED off or a fuzz build)"
  exit 0
fi
for tool in make pkg-config cc; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is needed"; exit 0; }
done
fail=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. install
cmake --install "$build" --prefix "$work/prefix" >"$work/install.log"
pc=$(find "$work/prefix" -name pagellm.pc)
libdir=$(dirname "$(dirname "$pc")")
if [ -f "$work/prefix/include/pagellm.h" ] && [ -f "$libdir/libpagellm.a" ] &&
   [ -L "$libdir/libpagellm.so" ] && [ -f "$libdir/libpagellm.so.0" ] && [ -n "$pc" ]; then
  ok "install: header, libpagellm.so -> .so.0, libpagellm.a, pagellm.pc"
else
  bad "install: $(find "$work/prefix" -type f -o -type l | tr '\n' ' ')"
fi
[ "$(ls "$work/prefix/include")" = "pagellm.h" ] && ok "install: one public header" ||
  bad "install: headers $(ls "$work/prefix/include")"
soname=$(objdump -p "$libdir/libpagellm.so.0" | awk '/SONAME/ {print $2}')
[ "$soname" = "libpagellm.so.0" ] && ok "SONAME $soname" || bad "SONAME '$soname'"

# 2. the exported symbols are the public API
nm -D --defined-only "$libdir/libpagellm.so.0" | awk '{print $3}' | sort >"$work/exports"
grep -o '^PL_API [^(]*(' "$src/include/pagellm.h" | sed 's/.*[ *]\([a-z_0-9]*\)($/\1/' |
  sort >"$work/api"
if diff "$work/api" "$work/exports" >"$work/exports.diff"; then
  ok "exports: the $(wc -l <"$work/api") PL_API functions, nothing else"
else
  bad "exports differ from PL_API (< header only, > exported only):"
  cat "$work/exports.diff"
fi
# every function the header declares is exported: a declaration without PL_API would
# compile for callers and then fail to link against libpagellm.so
if unmarked=$(grep -nE '^[a-z][a-z_ *]* \**pl_[a-z_0-9]+\(' "$src/include/pagellm.h"); then
  bad "pagellm.h declares functions without PL_API:"
  echo "$unmarked"
else
  ok "pagellm.h: every function is PL_API"
fi
printf '#include <pagellm.h>\nint main(void) { return pl_status_str(PL_STATUS_OK) == 0; }\n' \
  >"$work/alone.c"
if cc -std=c11 -Wall -Wextra -Werror -I"$work/prefix/include" -c "$work/alone.c" \
     -o "$work/alone.o" 2>"$work/alone.log"; then
  ok "pagellm.h compiles alone (C11, -Werror)"
else
  bad "pagellm.h alone: $(cat "$work/alone.log")"
fi

# 3. the out-of-tree example, shared and static
"$build/pl-mkmodel" --preset default --out "$work/model" >/dev/null
export PKG_CONFIG_PATH="$libdir/pkgconfig"
for mode in shared static; do
  rm -rf "$work/ex" && cp -r "$src/examples/c" "$work/ex"
  args=()
  [ "$mode" = static ] && args=(STATIC=1)
  if ! make -C "$work/ex" "${args[@]}" >"$work/make.log" 2>&1; then
    bad "examples/c ($mode): make failed"; cat "$work/make.log"; continue
  fi
  if [ "$mode" = shared ]; then
    loaded=$(ldd "$work/ex/stream" | awk '/libpagellm/ {print $3}')
    [ -n "$loaded" ] && [ "$(realpath "$loaded")" = "$(realpath "$libdir/libpagellm.so.0")" ] &&
      ok "examples/c (shared) loads the installed library" ||
      bad "examples/c (shared) loads '$loaded'"
  else
    ! ldd "$work/ex/stream" | grep -q libpagellm && ok "examples/c (static) needs no .so" ||
      bad "examples/c (static) still loads libpagellm"
  fi
  if out=$("$work/ex/stream" "$work/model" "The capital of France is" 2>"$work/run.log"); then
    echo "$out" | grep -q 'finish_reason length' &&
      ok "examples/c ($mode): streamed deltas equal generate's output" ||
      bad "examples/c ($mode): $out"
  else
    bad "examples/c ($mode): exit $?"; cat "$work/run.log"
  fi
done
exit $fail
