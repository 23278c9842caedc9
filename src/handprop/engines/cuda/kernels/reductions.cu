// Reductions without shared memory: the bias gradient (column sums, one
// thread per column) and the sum of squares (per-thread partials that the
// Python wrapper adds up). Both accumulate in double so float32 results stay
// as close to NumPy's pairwise sums as the float64 ones.
#include "common.cuh"

// out[c] = sum_r grad[r, c] for a row-major (rows, cols) grad. Threads of a
// warp read neighbouring columns, so loads are coalesced.
template <typename T>
__device__ void bias_grad(const T* __restrict__ grad, T* __restrict__ out, int rows, int cols) {
    HP_GRID_STRIDE_LOOP(c, cols) {
        double acc = 0.0;
        for (long long r = 0; r < rows; ++r) acc += (double)grad[r * cols + c];
        out[c] = (T)acc;
    }
}

// partials has one slot per launched thread (gridDim.x * blockDim.x); each
// thread writes its own slot, even when it had no elements to visit.
template <typename T>
__device__ void sum_squares(const T* __restrict__ w, double* __restrict__ partials, int n) {
    double acc = 0.0;
    HP_GRID_STRIDE_LOOP(i, n) {
        const double x = (double)w[i];
        acc += x * x;
    }
    partials[(long long)blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

extern "C" __global__ void bias_grad_f32(const float* grad, float* out, int rows, int cols) {
    bias_grad<float>(grad, out, rows, cols);
}
extern "C" __global__ void bias_grad_f64(const double* grad, double* out, int rows, int cols) {
    bias_grad<double>(grad, out, rows, cols);
}
extern "C" __global__ void sum_squares_f32(const float* w, double* partials, int n) {
    sum_squares<float>(w, partials, n);
}
extern "C" __global__ void sum_squares_f64(const double* w, double* partials, int n) {
    sum_squares<double>(w, partials, n);
}
