// Batch normalization over the rows of a row-major (rows, cols) array, one
// thread per column (feature): threads of a warp read neighbouring columns of
// the same row, so loads are coalesced, and no shared memory is needed.
// Column sums accumulate in double, and every step follows the reference
// (Engine.batch_norm_forward / batch_norm_backward in base.py) in order.
#include "common.cuh"

// mean, var: the batch mean and biased variance of each column;
// inv_std = 1 / sqrt(var + eps); x_hat = (x - mean) * inv_std;
// out = gamma * x_hat + beta.
template <typename T>
__device__ void batch_norm_forward(const T* __restrict__ x, const T* __restrict__ gamma,
                                   const T* __restrict__ beta, T eps, T* __restrict__ out,
                                   T* __restrict__ x_hat, T* __restrict__ inv_std,
                                   T* __restrict__ mean, T* __restrict__ var, int rows, int cols) {
    HP_GRID_STRIDE_LOOP(c, cols) {
        double acc = 0.0;
        for (long long r = 0; r < rows; ++r) acc += (double)x[r * cols + c];
        const T m = (T)(acc / rows);
        acc = 0.0;
        for (long long r = 0; r < rows; ++r) {
            const T d = x[r * cols + c] - m;
            acc += (double)(d * d);
        }
        const T v = (T)(acc / rows);
        const T s = (T)1 / hp_sqrt(v + eps);
        mean[c] = m;
        var[c] = v;
        inv_std[c] = s;
        const T g = gamma[c], b = beta[c];
        for (long long r = 0; r < rows; ++r) {
            const T h = (x[r * cols + c] - m) * s;
            x_hat[r * cols + c] = h;
            out[r * cols + c] = g * h + b;
        }
    }
}

// dbeta = sum_r grad, dgamma = sum_r grad * x_hat,
// dx = gamma * inv_std / rows * (rows * grad - dbeta - x_hat * dgamma).
template <typename T>
__device__ void batch_norm_backward(const T* __restrict__ grad, const T* __restrict__ x_hat,
                                    const T* __restrict__ inv_std, const T* __restrict__ gamma,
                                    T* __restrict__ dx, T* __restrict__ dgamma,
                                    T* __restrict__ dbeta, int rows, int cols) {
    HP_GRID_STRIDE_LOOP(c, cols) {
        double sum_g = 0.0, sum_gx = 0.0;
        for (long long r = 0; r < rows; ++r) {
            const T g = grad[r * cols + c];
            sum_g += (double)g;
            sum_gx += (double)(g * x_hat[r * cols + c]);
        }
        const T db = (T)sum_g, dg = (T)sum_gx;
        dbeta[c] = db;
        dgamma[c] = dg;
        const T n = (T)rows;
        const T scale = gamma[c] * inv_std[c] / n;
        for (long long r = 0; r < rows; ++r)
            dx[r * cols + c] = scale * (n * grad[r * cols + c] - db - x_hat[r * cols + c] * dg);
    }
}

extern "C" __global__ void batch_norm_forward_f32(const float* x, const float* gamma,
                                                  const float* beta, float eps, float* out,
                                                  float* x_hat, float* inv_std, float* mean,
                                                  float* var, int rows, int cols) {
    batch_norm_forward<float>(x, gamma, beta, eps, out, x_hat, inv_std, mean, var, rows, cols);
}
extern "C" __global__ void batch_norm_forward_f64(const double* x, const double* gamma,
                                                  const double* beta, double eps, double* out,
                                                  double* x_hat, double* inv_std, double* mean,
                                                  double* var, int rows, int cols) {
    batch_norm_forward<double>(x, gamma, beta, eps, out, x_hat, inv_std, mean, var, rows, cols);
}
extern "C" __global__ void batch_norm_backward_f32(const float* grad, const float* x_hat,
                                                   const float* inv_std, const float* gamma,
                                                   float* dx, float* dgamma, float* dbeta,
                                                   int rows, int cols) {
    batch_norm_backward<float>(grad, x_hat, inv_std, gamma, dx, dgamma, dbeta, rows, cols);
}
extern "C" __global__ void batch_norm_backward_f64(const double* grad, const double* x_hat,
                                                   const double* inv_std, const double* gamma,
                                                   double* dx, double* dgamma, double* dbeta,
                                                   int rows, int cols) {
    batch_norm_backward<double>(grad, x_hat, inv_std, gamma, dx, dgamma, dbeta, rows, cols);
}
