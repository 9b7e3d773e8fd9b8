# Shared by scripts/demo and scripts/test. Source it; do not run it.

# Debian 12 packages the build, the tests and the demo need.
CASEBRIDGE_PACKAGES=(
  g++ cmake ninja-build pkg-config make
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libssl-dev openssl libsodium-dev libsqlite3-dev sqlite3
  libgtest-dev libgmock-dev libbenchmark-dev
  libtomlplusplus-dev libcli11-dev nlohmann-json3-dev
  python3 python3-grpcio procps
)

casebridge_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

say() { printf '%s\n' "$*"; }

# Installs whatever of CASEBRIDGE_PACKAGES is missing (needs root then).
ensure_packages() {
  local missing=()
  local p
  for p in "${CASEBRIDGE_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "Installing Debian packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Configures (once) and builds into BUILD_DIR (default build/). Extra args
# are passed to cmake at configure time; targets via BUILD_TARGETS.
# RelWithDebInfo with line tables only (-g1): backtraces, perf and gdb keep
# function, file and line; full debug information (-g) costs a quarter more
# compile time. Configure a build of your own for variables in gdb. (Flags
# are set when a build directory is first configured; an existing one keeps
# its own until it is removed.)
build_project() {
  local root build_dir
  root=$(casebridge_root)
  build_dir=${BUILD_DIR:-$root/build}
  if [ ! -f "$build_dir/build.ninja" ]; then
    cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" \
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" "$@" >/dev/null
  fi
  # shellcheck disable=SC2086
  cmake --build "$build_dir" --parallel "$(nproc)" ${BUILD_TARGETS:+--target $BUILD_TARGETS}
}
