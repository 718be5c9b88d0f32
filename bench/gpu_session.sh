#!/usr/bin/env bash
# One lent-GPU session in one command (the device machine goes back after ~30 s idle, so build,
# test and benchmark together). Run from the repository root on the GPU machine:
#   bash bench/gpu_session.sh            # logs and the wheel go to $OUT (or ./gpu-out)
# Stages (each time-limited, the next runs even if one fails):
#   1. build a wheel with the CUDA module for sm_90 (or reuse one from $FF_WHEEL) and install it
#   2. tests/test_cuda.py (the real-GPU tests run here; they skip elsewhere)
#   3. bench/gpu.py --json
#   4. bench/gpu_profile.py, then the same under Nsight Compute (per-kernel times)
#   5. compute-sanitizer memcheck over the real-GPU tests
#   6. the whole suite (CPU kernels on this machine's processor)
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT/wheel"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
t0=$(date +%s)
stamp() { echo "=== $1 at +$(( $(date +%s) - t0 )) s"; }

{
  stamp "machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  lscpu | grep -E 'Model name|^CPU\(s\)|Flags' | cut -c1-200
  $PY -c "import sys, numpy, cupy; print(sys.version); print('numpy', numpy.__version__, 'cupy', cupy.__version__)"
  nvcc --version | tail -2
  git log -1 --format='commit %H %s' 2>/dev/null || true
  stamp "build"
  if [ -n "${FF_WHEEL:-}" ] && ls $FF_WHEEL >/dev/null 2>&1; then
    cp $FF_WHEEL "$OUT/wheel/"
  else
    timeout 400 $PY -m pip wheel -v --no-build-isolation --no-deps -w "$OUT/wheel" \
      -Ccmake.define.FASTFOOL_CUDA=ON -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90-real \
      -Cbuild-dir=/tmp/ffbuild . 2>&1 | grep -vE '^\s*(copying|adding) ' | tail -60
  fi
  $PY -m pip install -q --no-index --no-deps --force-reinstall "$OUT"/wheel/fastfool-*.whl
  (cd /tmp && $PY -c "import fastfool, fastfool.cuda as c; print(fastfool.__file__); print(c.info())")
  stamp "built"
} >"$OUT/build.log" 2>&1

stamp "test_cuda" >"$OUT/cuda_tests.log"
timeout ${FF_T_TESTS:-240} $PY -m pytest tests/test_cuda.py -v -p no:cacheprovider -rs \
  >>"$OUT/cuda_tests.log" 2>&1
stamp "done rc=$?" >>"$OUT/cuda_tests.log"

stamp "bench" >"$OUT/gpu.log"
timeout ${FF_T_BENCH:-150} $PY bench/gpu.py --json "$OUT/gpu.json" >>"$OUT/gpu.log" 2>&1
stamp "done rc=$?" >>"$OUT/gpu.log"

if [ "${FF_PROFILE:-1}" = 1 ] && command -v ncu >/dev/null; then
  stamp "profile" >"$OUT/profile.log"
  $PY bench/gpu_profile.py >>"$OUT/profile.log" 2>&1
  timeout ${FF_T_PROF:-180} ncu --clock-control none --csv --print-units base --metrics \
gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,\
sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread \
    $PY bench/gpu_profile.py --once >>"$OUT/profile.log" 2>&1
  stamp "done rc=$?" >>"$OUT/profile.log"
fi

if [ "${FF_SANITIZE:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  stamp "memcheck" >"$OUT/sanitize.log"
  timeout ${FF_T_SAN:-150} compute-sanitizer --tool memcheck --error-exitcode 9 \
    $PY -m pytest tests/test_cuda.py -q -p no:cacheprovider -k "gpu_ and not emulated and not without and not attacks_agree and not take_device" \
    >>"$OUT/sanitize.log" 2>&1
  stamp "done rc=$?" >>"$OUT/sanitize.log"
fi

if [ "${FF_SUITE:-1}" = 1 ]; then
  stamp "suite" >"$OUT/suite.log"
  # 6 workers x 2 threads: more oversubscribes the 16 cores (the first try, 8 workers with 16
  # threads each, ran past 200 s)
  FASTFOOL_NUM_THREADS=2 OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 timeout ${FF_T_SUITE:-240} \
    $PY -m pytest tests -q -p no:cacheprovider -p no:benchmark -n 6 --timeout 300 --durations=25 \
    >>"$OUT/suite.log" 2>&1
  stamp "done rc=$?" >>"$OUT/suite.log"
fi
echo "total $(( $(date +%s) - t0 )) s"
