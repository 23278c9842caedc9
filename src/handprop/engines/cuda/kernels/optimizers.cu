// In-place optimizer updates in the torch.optim form, with coupled weight
// decay (g = grad + weight_decay * param). Mirrors Engine.sgd_update,
// Engine.momentum_update and Engine.adam_update.
#include "common.cuh"

// Decay is skipped when weight_decay == 0, as in the reference, so an
// infinite parameter does not turn a zero decay into NaN.
template <typename T>
__device__ __forceinline__ T hp_decayed(T g, T p, T weight_decay) {
    return weight_decay != T(0) ? g + weight_decay * p : g;
}

template <typename T>
__device__ void sgd_update(T* __restrict__ param, const T* __restrict__ grad, int n, T lr,
                           T weight_decay) {
    HP_GRID_STRIDE_LOOP(i, n) {
        const T g = hp_decayed(grad[i], param[i], weight_decay);
        param[i] -= lr * g;
    }
}

// v = momentum * v + g; classic steps by v, Nesterov by g + momentum * v.
template <typename T>
__device__ void momentum_update(T* __restrict__ param, const T* __restrict__ grad,
                                T* __restrict__ velocity, int n, T lr, T momentum,
                                T weight_decay, int nesterov) {
    HP_GRID_STRIDE_LOOP(i, n) {
        const T g = hp_decayed(grad[i], param[i], weight_decay);
        const T v = velocity[i] * momentum + g;
        velocity[i] = v;
        param[i] -= nesterov ? lr * (g + momentum * v) : lr * v;
    }
}

// Bias-corrected Adam. The host passes step_size = lr / (1 - beta1^t) and
// sqrt_bc2 = sqrt(1 - beta2^t), computed in double as the reference does:
// p -= step_size * m / (sqrt(v) / sqrt_bc2 + eps).
template <typename T>
__device__ void adam_update(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ m,
                            T* __restrict__ v, int n, T beta1, T one_minus_beta1, T beta2,
                            T one_minus_beta2, T eps, T step_size, T sqrt_bc2,
                            T weight_decay) {
    HP_GRID_STRIDE_LOOP(i, n) {
        const T g = hp_decayed(grad[i], param[i], weight_decay);
        const T mi = m[i] * beta1 + one_minus_beta1 * g;
        const T vi = v[i] * beta2 + one_minus_beta2 * (g * g);
        m[i] = mi;
        v[i] = vi;
        param[i] -= step_size * (mi / (hp_sqrt(vi) / sqrt_bc2 + eps));
    }
}

extern "C" __global__ void sgd_update_f32(float* param, const float* grad, int n, float lr,
                                          float weight_decay) {
    sgd_update<float>(param, grad, n, lr, weight_decay);
}
extern "C" __global__ void sgd_update_f64(double* param, const double* grad, int n, double lr,
                                          double weight_decay) {
    sgd_update<double>(param, grad, n, lr, weight_decay);
}
extern "C" __global__ void momentum_update_f32(float* param, const float* grad, float* velocity,
                                               int n, float lr, float momentum,
                                               float weight_decay, int nesterov) {
    momentum_update<float>(param, grad, velocity, n, lr, momentum, weight_decay, nesterov);
}
extern "C" __global__ void momentum_update_f64(double* param, const double* grad,
                                               double* velocity, int n, double lr,
                                               double momentum, double weight_decay,
                                               int nesterov) {
    momentum_update<double>(param, grad, velocity, n, lr, momentum, weight_decay, nesterov);
}
extern "C" __global__ void adam_update_f32(float* param, const float* grad, float* m, float* v,
                                           int n, float beta1, float one_minus_beta1,
                                           float beta2, float one_minus_beta2, float eps,
                                           float step_size, float sqrt_bc2,
                                           float weight_decay) {
    adam_update<float>(param, grad, m, v, n, beta1, one_minus_beta1, beta2, one_minus_beta2, eps,
                       step_size, sqrt_bc2, weight_decay);
}
extern "C" __global__ void adam_update_f64(double* param, const double* grad, double* m,
                                           double* v, int n, double beta1,
                                           double one_minus_beta1, double beta2,
                                           double one_minus_beta2, double eps,
                                           double step_size, double sqrt_bc2,
                                           double weight_decay) {
    adam_update<double>(param, grad, m, v, n, beta1, one_minus_beta1, beta2, one_minus_beta2,
                        eps, step_size, sqrt_bc2, weight_decay);
}
