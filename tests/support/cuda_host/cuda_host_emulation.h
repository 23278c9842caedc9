// Host emulation of the CUDA C subset used by kernels/*.cu, so the exact
// kernel source compiles with g++ (-x c++ -include this header) and runs on
// the CPU. Kernels there use grid-stride loops and no shared memory, no
// __syncthreads, no warp shuffles: running the threads one after another is
// then a faithful schedule.
#pragma once

#include <math.h>
#include <stddef.h>
#include <string.h>

#include <type_traits>
#include <utility>

// glibc declares but does not export CUDA's fast intrinsics; map them to the
// accurate functions (the kernels do not use them, but a future one might).
#define __expf expf
#define __logf logf
#define __sinf sinf
#define __cosf cosf
#define __powf powf
#define __fdividef(a, b) ((a) / (b))

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __restrict__ __restrict

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};

// One "thread" of the grid runs at a time per host thread; thread_local keeps
// concurrent launches from different Python threads apart.
inline thread_local uint3 threadIdx = {0, 0, 0};
inline thread_local uint3 blockIdx = {0, 0, 0};
inline thread_local dim3 blockDim = {1, 1, 1};
inline thread_local dim3 gridDim = {1, 1, 1};

// Bit casts, as CUDA's device intrinsics.
inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}
inline double __longlong_as_double(long long i) {
    double d;
    memcpy(&d, &i, sizeof d);
    return d;
}

// CUDA's exact min/max overload set (crt/math_functions.hpp), so a call that
// nvcc finds ambiguous is ambiguous here too, and no std:: overload sneaks in.
#define HP_MINMAX(name, op)                                                                     \
    inline int name(const int a, const int b) { return a op b ? a : b; }                       \
    inline unsigned int name(const unsigned int a, const unsigned int b) { return a op b ? a : b; } \
    inline unsigned int name(const int a, const unsigned int b) {                               \
        return name((unsigned int)a, b);                                                        \
    }                                                                                           \
    inline unsigned int name(const unsigned int a, const int b) {                               \
        return name(a, (unsigned int)b);                                                        \
    }                                                                                           \
    inline long int name(const long int a, const long int b) { return a op b ? a : b; }        \
    inline unsigned long int name(const unsigned long int a, const unsigned long int b) {       \
        return a op b ? a : b;                                                                  \
    }                                                                                           \
    inline unsigned long int name(const long int a, const unsigned long int b) {                \
        return name((unsigned long int)a, b);                                                   \
    }                                                                                           \
    inline unsigned long int name(const unsigned long int a, const long int b) {                \
        return name(a, (unsigned long int)b);                                                   \
    }                                                                                           \
    inline long long int name(const long long int a, const long long int b) {                   \
        return a op b ? a : b;                                                                  \
    }                                                                                           \
    inline unsigned long long int name(const unsigned long long int a,                          \
                                       const unsigned long long int b) {                        \
        return a op b ? a : b;                                                                  \
    }                                                                                           \
    inline unsigned long long int name(const long long int a, const unsigned long long int b) { \
        return name((unsigned long long int)a, b);                                              \
    }                                                                                           \
    inline unsigned long long int name(const unsigned long long int a, const long long int b) { \
        return name(a, (unsigned long long int)b);                                              \
    }                                                                                           \
    inline float name(const float a, const float b) { return f##name##f(a, b); }               \
    inline double name(const double a, const double b) { return f##name(a, b); }               \
    inline double name(const float a, const double b) { return f##name((double)a, b); }        \
    inline double name(const double a, const float b) { return f##name(a, (double)b); }
HP_MINMAX(min, <)
HP_MINMAX(max, >)
#undef HP_MINMAX

// ---------------------------------------------------------------- launcher
// Arguments arrive as cuLaunchKernel passes them: an array of pointers, one
// per parameter, each pointing at the parameter's value.
template <typename... A, size_t... I>
inline void hp_emu_call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

// Runs every thread of every block, one after another.
template <typename... A>
inline void hp_emu_launch(void (*kernel)(A...), unsigned grid, unsigned block, void** args) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        for (unsigned t = 0; t < block; ++t) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            hp_emu_call(kernel, args, std::index_sequence_for<A...>{});
        }
    }
}

// One type code per parameter, so the Python side can check what it passes
// (a Python float would otherwise arrive where a float is read as a double).
template <typename T> struct hp_emu_code;
template <> struct hp_emu_code<int> { static constexpr char value = 'i'; };
template <> struct hp_emu_code<long long> { static constexpr char value = 'q'; };
template <> struct hp_emu_code<float> { static constexpr char value = 'f'; };
template <> struct hp_emu_code<double> { static constexpr char value = 'd'; };

template <typename T> struct hp_emu_param {
    static constexpr char kind = 's';  // scalar
    static constexpr char code = hp_emu_code<std::remove_cv_t<T>>::value;
};
template <typename T> struct hp_emu_param<T*> {
    static constexpr char kind = 'p';  // pointer to device memory
    static constexpr char code = hp_emu_code<std::remove_cv_t<T>>::value;
};

template <typename... A> inline const char* hp_emu_signature(void (*)(A...)) {
    // Two characters per parameter: 'p' (pointer) or 's' (scalar), then the
    // element type code, e.g. "pfpfsisf" for (float*, float*, int, float).
    static const char kinds[] = {hp_emu_param<A>::kind...};
    static const char codes[] = {hp_emu_param<A>::code...};
    static char sig[2 * sizeof...(A) + 1] = {};
    for (size_t i = 0; i < sizeof...(A); ++i) {
        sig[2 * i] = kinds[i];
        sig[2 * i + 1] = codes[i];
    }
    return sig;
}

// Exports launch_<name>(grid, block, args) and signature_<name>() for one
// extern "C" kernel; the generated translation unit lists every kernel.
#define HP_EMU_EXPORT(name)                                                              \
    extern "C" void launch_##name(unsigned grid, unsigned block, void** args) {          \
        hp_emu_launch(name, grid, block, args);                                           \
    }                                                                                    \
    extern "C" const char* signature_##name() { return hp_emu_signature(name); }
