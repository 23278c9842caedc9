// Convolution gathers and pooling on NCHW images (Engine.im2col, col2im,
// max_pool_* and avg_pool_* in base.py). One thread per output element and
// grid-stride loops; every index is 64-bit, since an im2col buffer passes
// 2^31 elements at large batches. The backward passes are gathers (one
// thread per input element summing what reaches it), so no two threads
// write one element: no atomics, and the sums are deterministic. They add in
// the reference's order, so results equal it bit for bit.
#include "common.cuh"

// cols (n*oh*ow, c*kh*kw): rows in (n, oh, ow) order, columns in (c, i, j)
// order; x (n, c, h, w); zeros where a window reaches into the padding.
template <typename T>
__device__ void im2col(const T* __restrict__ x, T* __restrict__ cols, int n, int c, int h, int w,
                       int kh, int kw, int sh, int sw, int top, int left, int oh, int ow) {
    const long long width = (long long)c * kh * kw;
    const long long total = (long long)n * oh * ow * width;
    HP_GRID_STRIDE_LOOP(idx, total) {
        const long long row = idx / width, col = idx % width;
        const long long q = row % ow, p = (row / ow) % oh, b = row / ((long long)ow * oh);
        const long long j = col % kw, i = (col / kw) % kh, ch = col / ((long long)kw * kh);
        const long long y = p * sh - top + i, xx = q * sw - left + j;
        cols[idx] = (y >= 0 && y < h && xx >= 0 && xx < w) ? x[((b * c + ch) * h + y) * w + xx]
                                                           : (T)0;
    }
}

// dx (n, c, h, w): for each element, the sum of the cols entries that read
// it, window offsets (i, j) in row-major order as the reference adds them.
template <typename T>
__device__ void col2im(const T* __restrict__ cols, T* __restrict__ dx, int n, int c, int h, int w,
                       int kh, int kw, int sh, int sw, int top, int left, int oh, int ow) {
    const long long width = (long long)c * kh * kw;
    const long long total = (long long)n * c * h * w;
    HP_GRID_STRIDE_LOOP(idx, total) {
        const long long xx = idx % w, y = (idx / w) % h, ch = (idx / ((long long)w * h)) % c;
        const long long b = idx / ((long long)w * h * c);
        T acc = (T)0;
        for (int i = 0; i < kh; ++i) {
            const long long py = y + top - i;  // = p * sh for the window row p that reads y
            if (py < 0 || py % sh != 0 || py / sh >= oh) continue;
            for (int j = 0; j < kw; ++j) {
                const long long qx = xx + left - j;
                if (qx < 0 || qx % sw != 0 || qx / sw >= ow) continue;
                const long long row = (b * oh + py / sh) * ow + qx / sw;
                acc += cols[row * width + (ch * kh + i) * kw + j];
            }
        }
        dx[idx] = acc;
    }
}

// out, argmax (n, c, oh, ow): each window's maximum and its row-major position
// in the window; the first on ties, the first NaN if any (as NumPy).
template <typename T>
__device__ void max_pool_forward(const T* __restrict__ x, T* __restrict__ out,
                                 long long* __restrict__ argmax, int n, int c, int h, int w,
                                 int ph, int pw, int sh, int sw, int oh, int ow) {
    const long long total = (long long)n * c * oh * ow;
    HP_GRID_STRIDE_LOOP(idx, total) {
        const long long q = idx % ow, p = (idx / ow) % oh, plane = idx / ((long long)ow * oh);
        const T* window = x + (plane * h + p * sh) * w + q * sw;
        T best = window[0];
        long long where = 0;
        for (int i = 0; i < ph; ++i) {
            for (int j = 0; j < pw; ++j) {
                const T v = window[(long long)i * w + j];
                // v != v: a NaN wins over numbers, and the first NaN stays.
                if (v > best || (v != v && best == best)) {
                    best = v;
                    where = (long long)i * pw + j;
                }
            }
        }
        out[idx] = best;
        argmax[idx] = where;
    }
}

// The first and last window (along one axis) that covers position y.
__device__ __forceinline__ void hp_windows_covering(long long y, int size, int stride, int count,
                                                    long long* first, long long* last) {
    const long long lo = y - size + 1;
    *first = lo <= 0 ? 0 : (lo + stride - 1) / stride;
    *last = min(y / stride, (long long)count - 1);
}

// dx (n, c, h, w): the gradients of the windows whose arg-max is this element.
// Windows are visited last to first, which is the order in which the
// reference adds its window offsets (i, j) = (y - p * sh, x - q * sw).
template <typename T>
__device__ void max_pool_backward(const T* __restrict__ grad, const long long* __restrict__ argmax,
                                  T* __restrict__ dx, int n, int c, int h, int w, int ph, int pw,
                                  int sh, int sw, int oh, int ow) {
    const long long total = (long long)n * c * h * w;
    HP_GRID_STRIDE_LOOP(idx, total) {
        const long long xx = idx % w, y = (idx / w) % h, plane = idx / ((long long)w * h);
        long long p0, p1, q0, q1;
        hp_windows_covering(y, ph, sh, oh, &p0, &p1);
        hp_windows_covering(xx, pw, sw, ow, &q0, &q1);
        T acc = (T)0;
        for (long long p = p1; p >= p0; --p) {
            for (long long q = q1; q >= q0; --q) {
                const long long o = (plane * oh + p) * ow + q;
                if (argmax[o] == (y - p * sh) * pw + (xx - q * sw)) acc += grad[o];
            }
        }
        dx[idx] = acc;
    }
}

// out (n, c, oh, ow): each window's sum in row-major order, over its size.
template <typename T>
__device__ void avg_pool_forward(const T* __restrict__ x, T* __restrict__ out, int n, int c,
                                 int h, int w, int ph, int pw, int sh, int sw, int oh, int ow) {
    const long long total = (long long)n * c * oh * ow;
    const T count = (T)(ph * pw);
    HP_GRID_STRIDE_LOOP(idx, total) {
        const long long q = idx % ow, p = (idx / ow) % oh, plane = idx / ((long long)ow * oh);
        const T* window = x + (plane * h + p * sh) * w + q * sw;
        T acc = window[0];
        for (int k = 1; k < ph * pw; ++k) acc += window[(long long)(k / pw) * w + k % pw];
        out[idx] = acc / count;
    }
}

// dx (n, c, h, w): the share grad / (ph * pw) of every window covering it.
template <typename T>
__device__ void avg_pool_backward(const T* __restrict__ grad, T* __restrict__ dx, int n, int c,
                                  int h, int w, int ph, int pw, int sh, int sw, int oh, int ow) {
    const long long total = (long long)n * c * h * w;
    const T count = (T)(ph * pw);
    HP_GRID_STRIDE_LOOP(idx, total) {
        const long long xx = idx % w, y = (idx / w) % h, plane = idx / ((long long)w * h);
        long long p0, p1, q0, q1;
        hp_windows_covering(y, ph, sh, oh, &p0, &p1);
        hp_windows_covering(xx, pw, sw, ow, &q0, &q1);
        T acc = (T)0;
        for (long long p = p1; p >= p0; --p)
            for (long long q = q1; q >= q0; --q) acc += grad[(plane * oh + p) * ow + q] / count;
        dx[idx] = acc;
    }
}

extern "C" __global__ void im2col_f32(const float* x, float* cols, int n, int c, int h, int w,
                                      int kh, int kw, int sh, int sw, int top, int left, int oh,
                                      int ow) {
    im2col<float>(x, cols, n, c, h, w, kh, kw, sh, sw, top, left, oh, ow);
}
extern "C" __global__ void im2col_f64(const double* x, double* cols, int n, int c, int h, int w,
                                      int kh, int kw, int sh, int sw, int top, int left, int oh,
                                      int ow) {
    im2col<double>(x, cols, n, c, h, w, kh, kw, sh, sw, top, left, oh, ow);
}
extern "C" __global__ void col2im_f32(const float* cols, float* dx, int n, int c, int h, int w,
                                      int kh, int kw, int sh, int sw, int top, int left, int oh,
                                      int ow) {
    col2im<float>(cols, dx, n, c, h, w, kh, kw, sh, sw, top, left, oh, ow);
}
extern "C" __global__ void col2im_f64(const double* cols, double* dx, int n, int c, int h, int w,
                                      int kh, int kw, int sh, int sw, int top, int left, int oh,
                                      int ow) {
    col2im<double>(cols, dx, n, c, h, w, kh, kw, sh, sw, top, left, oh, ow);
}
extern "C" __global__ void max_pool_forward_f32(const float* x, float* out, long long* argmax,
                                                int n, int c, int h, int w, int ph, int pw, int sh,
                                                int sw, int oh, int ow) {
    max_pool_forward<float>(x, out, argmax, n, c, h, w, ph, pw, sh, sw, oh, ow);
}
extern "C" __global__ void max_pool_forward_f64(const double* x, double* out, long long* argmax,
                                                int n, int c, int h, int w, int ph, int pw, int sh,
                                                int sw, int oh, int ow) {
    max_pool_forward<double>(x, out, argmax, n, c, h, w, ph, pw, sh, sw, oh, ow);
}
extern "C" __global__ void max_pool_backward_f32(const float* grad, const long long* argmax,
                                                 float* dx, int n, int c, int h, int w, int ph,
                                                 int pw, int sh, int sw, int oh, int ow) {
    max_pool_backward<float>(grad, argmax, dx, n, c, h, w, ph, pw, sh, sw, oh, ow);
}
extern "C" __global__ void max_pool_backward_f64(const double* grad, const long long* argmax,
                                                 double* dx, int n, int c, int h, int w, int ph,
                                                 int pw, int sh, int sw, int oh, int ow) {
    max_pool_backward<double>(grad, argmax, dx, n, c, h, w, ph, pw, sh, sw, oh, ow);
}
extern "C" __global__ void avg_pool_forward_f32(const float* x, float* out, int n, int c, int h,
                                                int w, int ph, int pw, int sh, int sw, int oh,
                                                int ow) {
    avg_pool_forward<float>(x, out, n, c, h, w, ph, pw, sh, sw, oh, ow);
}
extern "C" __global__ void avg_pool_forward_f64(const double* x, double* out, int n, int c, int h,
                                                int w, int ph, int pw, int sh, int sw, int oh,
                                                int ow) {
    avg_pool_forward<double>(x, out, n, c, h, w, ph, pw, sh, sw, oh, ow);
}
extern "C" __global__ void avg_pool_backward_f32(const float* grad, float* dx, int n, int c, int h,
                                                 int w, int ph, int pw, int sh, int sw, int oh,
                                                 int ow) {
    avg_pool_backward<float>(grad, dx, n, c, h, w, ph, pw, sh, sw, oh, ow);
}
extern "C" __global__ void avg_pool_backward_f64(const double* grad, double* dx, int n, int c,
                                                 int h, int w, int ph, int pw, int sh, int sw,
                                                 int oh, int ow) {
    avg_pool_backward<double>(grad, dx, n, c, h, w, ph, pw, sh, sw, oh, ow);
}
