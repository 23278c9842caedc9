// Helpers shared by every kernel family in this directory.
//
// Rules every kernel here follows, so the same source also runs on the host
// emulator used by the CPU test suite (tests/cuda_host/):
//   * grid-stride loops, so any grid size covers any problem size;
//   * no shared memory, no __syncthreads, no warp shuffles, no atomics;
//   * one body per kernel written as a template on the element type T, with
//     extern "C" entry points suffixed _f32 / _f64 so NVRTC/CuPy and ctypes
//     find them by plain names.
#pragma once

// Grid-stride loop over [0, n). The index is 64-bit so `i += stride` cannot
// overflow for n close to INT_MAX.
#define HP_GRID_STRIDE_LOOP(i, n)                                               \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;        \
         i < (long long)(n); i += (long long)blockDim.x * gridDim.x)

// Precision-matched math: the float overloads call the float functions
// explicitly (never the fast __expf-style intrinsics) so results match NumPy.
__device__ __forceinline__ float hp_exp(float x) { return expf(x); }
__device__ __forceinline__ double hp_exp(double x) { return exp(x); }
__device__ __forceinline__ float hp_log(float x) { return logf(x); }
__device__ __forceinline__ double hp_log(double x) { return log(x); }
__device__ __forceinline__ float hp_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double hp_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float hp_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double hp_abs(double x) { return fabs(x); }
__device__ __forceinline__ float hp_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double hp_sqrt(double x) { return sqrt(x); }

// A quiet NaN, used to poison results that must not be trusted (an unknown
// activation code, an out-of-range label).
template <typename T> __device__ __forceinline__ T hp_nan();
template <> __device__ __forceinline__ float hp_nan<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ __forceinline__ double hp_nan<double>() {
    return __longlong_as_double(0x7ff8000000000000LL);
}

// Activation codes: must equal handprop.engines.base.ACTIVATION_CODES.
#define HP_ACT_IDENTITY 0
#define HP_ACT_SIGMOID 1
#define HP_ACT_TANH 2
#define HP_ACT_RELU 3
#define HP_ACT_LEAKY_RELU 4
#define HP_ACT_LECUN_TANH 5

// LeCun's improved sigmoid f(x) = A tanh(S x); same constants as base.py.
#define HP_LECUN_A 1.7159
#define HP_LECUN_S (2.0 / 3.0)
