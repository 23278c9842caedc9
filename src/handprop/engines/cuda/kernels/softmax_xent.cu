// Softmax cross-entropy forward and backward in one pass, one thread per row.
// Mirrors Engine.softmax_xent: the per-row losses go to row_loss (the Python
// wrapper sums them) and grad = (softmax - onehot) / rows.
#include "common.cuh"

// A label outside [0, cols) poisons its row (NaN loss and gradient) and sets
// *bad_label = 1. Every writer stores the same value, so the race is benign
// and no atomic is needed.
template <typename T>
__device__ void softmax_xent(const T* __restrict__ logits, const long long* __restrict__ labels,
                             T* __restrict__ grad, T* __restrict__ row_loss,
                             int* __restrict__ bad_label, int rows, int cols) {
    HP_GRID_STRIDE_LOOP(r, rows) {
        const T* x = logits + r * cols;
        T* g = grad + r * cols;
        const long long label = labels[r];
        if (label < 0 || label >= cols) {
            *bad_label = 1;
            row_loss[r] = hp_nan<T>();
            for (int j = 0; j < cols; ++j) g[j] = hp_nan<T>();
            continue;
        }
        // Shift by the row maximum so exp never overflows (logits of 1e4 are fine).
        T mx = x[0];
        for (int j = 1; j < cols; ++j) mx = x[j] > mx ? x[j] : mx;
        T sum = T(0);
        for (int j = 0; j < cols; ++j) sum += hp_exp(x[j] - mx);
        const T log_sum = hp_log(sum);
        row_loss[r] = log_sum - (x[label] - mx);
        for (int j = 0; j < cols; ++j) {
            const T p = hp_exp(x[j] - mx - log_sum);
            g[j] = (p - (j == label ? T(1) : T(0))) / T(rows);
        }
    }
}

extern "C" __global__ void softmax_xent_f32(const float* logits, const long long* labels,
                                            float* grad, float* row_loss, int* bad_label,
                                            int rows, int cols) {
    softmax_xent<float>(logits, labels, grad, row_loss, bad_label, rows, cols);
}
extern "C" __global__ void softmax_xent_f64(const double* logits, const long long* labels,
                                            double* grad, double* row_loss, int* bad_label,
                                            int rows, int cols) {
    softmax_xent<double>(logits, labels, grad, row_loss, bad_label, rows, cols);
}
