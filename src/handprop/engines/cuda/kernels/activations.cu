// Fused bias + activation forward, and activation backward from the saved
// output. Mirrors Engine.bias_act / Engine.activation / Engine.act_backward.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ T hp_activate(T z, int code, T alpha) {
    switch (code) {
    case HP_ACT_IDENTITY:
        return z;
    case HP_ACT_SIGMOID: {
        // exp of a non-positive number never overflows.
        const T e = hp_exp(-hp_abs(z));
        return z >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
    }
    case HP_ACT_TANH:
        return hp_tanh(z);
    case HP_ACT_RELU:
        return z > T(0) ? z : T(0);
    case HP_ACT_LEAKY_RELU:
        return z > T(0) ? z : z * alpha;
    case HP_ACT_LECUN_TANH:
        return T(HP_LECUN_A) * hp_tanh(T(HP_LECUN_S) * z);
    default:
        return hp_nan<T>();
    }
}

// Derivative times grad, written in terms of out = f(z).
template <typename T>
__device__ __forceinline__ T hp_activate_backward(T g, T out, int code, T alpha) {
    switch (code) {
    case HP_ACT_IDENTITY:
        return g;
    case HP_ACT_SIGMOID:
        return g * out * (T(1) - out);
    case HP_ACT_TANH:
        return g * (T(1) - out * out);
    case HP_ACT_RELU:
        return out > T(0) ? g : T(0);
    case HP_ACT_LEAKY_RELU:
        return out > T(0) ? g : g * alpha;
    case HP_ACT_LECUN_TANH: {
        const T t = out / T(HP_LECUN_A);
        return g * T(HP_LECUN_A * HP_LECUN_S) * (T(1) - t * t);
    }
    default:
        return hp_nan<T>();
    }
}

// out[i] = f(z[i] + b[i % cols]) over n = rows * cols elements (row-major).
// has_bias == 0 applies f alone; b is then never read.
template <typename T>
__device__ void bias_act(const T* __restrict__ z, const T* __restrict__ b, T* __restrict__ out,
                         int n, int cols, int code, T alpha, int has_bias) {
    HP_GRID_STRIDE_LOOP(i, n) {
        const T x = has_bias ? z[i] + b[i % cols] : z[i];
        out[i] = hp_activate(x, code, alpha);
    }
}

template <typename T>
__device__ void act_backward(const T* __restrict__ grad, const T* __restrict__ out,
                             T* __restrict__ dz, int n, int code, T alpha) {
    HP_GRID_STRIDE_LOOP(i, n) { dz[i] = hp_activate_backward(grad[i], out[i], code, alpha); }
}

extern "C" __global__ void bias_act_f32(const float* z, const float* b, float* out, int n,
                                        int cols, int code, float alpha, int has_bias) {
    bias_act<float>(z, b, out, n, cols, code, alpha, has_bias);
}
extern "C" __global__ void bias_act_f64(const double* z, const double* b, double* out, int n,
                                        int cols, int code, double alpha, int has_bias) {
    bias_act<double>(z, b, out, n, cols, code, alpha, has_bias);
}
extern "C" __global__ void act_backward_f32(const float* grad, const float* out, float* dz,
                                            int n, int code, float alpha) {
    act_backward<float>(grad, out, dz, n, code, alpha);
}
extern "C" __global__ void act_backward_f64(const double* grad, const double* out, double* dz,
                                            int n, int code, double alpha) {
    act_backward<double>(grad, out, dz, n, code, alpha);
}
