//go:build cgo && amd64

package cpu

/*
#cgo CFLAGS: -O2
#include <immintrin.h>
#include <math.h>

static int kern_avx2(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#define AVX2 __attribute__((target("avx2,fma")))

// exp8 is the Cephes expf polynomial (as expPoly in Go) for x in [-87.34, 88].
AVX2 static inline __m256 exp8(__m256 x) {
	__m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
	__m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
	r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
	__m256 y = _mm256_set1_ps(1.9875691500e-4f);
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
	y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
	y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
	__m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
	return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// expm8 is e^x for x <= 0: 0 below -87.34 (and for -Inf), NaN for NaN.
AVX2 static inline __m256 expm8(__m256 x) {
	__m256 lo = _mm256_set1_ps(-87.33654f);
	__m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
	return _mm256_andnot_ps(under, exp8(_mm256_max_ps(lo, x))); // max keeps a NaN x
}

// tailmask has the first n (0..8) lanes set.
AVX2 static inline __m256i tailmask(long n) {
	return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

AVX2 static void cap_rows(float *x, float *d, long n, float c) {
	__m256 vc = _mm256_set1_ps(c), k = _mm256_set1_ps(2 / c), one = _mm256_set1_ps(1), two = _mm256_set1_ps(2);
	__m256 lo = _mm256_set1_ps(-18), hi = _mm256_set1_ps(18);
	for (long i = 0; i < n; i += 8) {
		__m256i m = tailmask(n - i);
		__m256 y = _mm256_mul_ps(_mm256_maskload_ps(x + i, m), k);
		y = _mm256_min_ps(hi, _mm256_max_ps(lo, y)); // NaN stays NaN
		__m256 t = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(exp8(y), one)));
		_mm256_maskstore_ps(x + i, m, _mm256_mul_ps(vc, t));
		_mm256_maskstore_ps(d + i, m, _mm256_fnmadd_ps(t, t, one));
	}
}

AVX2 static float hmax8(__m256 v) {
	__m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	m = _mm_max_ps(m, _mm_movehl_ps(m, m));
	m = _mm_max_ss(m, _mm_movehdup_ps(m));
	return _mm_cvtss_f32(m);
}

// exp_shift sets y = e^(x - shift) over n entries and returns the sum in double.
AVX2 static double exp_shift(const float *x, float *y, long n, float shift) {
	__m256 s = _mm256_set1_ps(shift);
	__m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
	for (long i = 0; i < n; i += 8) {
		__m256i m = tailmask(n - i);
		__m256 e = expm8(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), s));
		e = _mm256_and_ps(e, _mm256_castsi256_ps(m)); // zero the lanes past n
		_mm256_maskstore_ps(y + i, m, e);
		acc0 = _mm256_add_pd(acc0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
		acc1 = _mm256_add_pd(acc1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
	}
	double a[4];
	_mm256_storeu_pd(a, _mm256_add_pd(acc0, acc1));
	return (a[0] + a[1]) + (a[2] + a[3]);
}

AVX2 static void softmax_rows(float *p, long rows, long cols) {
	for (long r = 0; r < rows; r++) {
		float *row = p + r * cols;
		__m256 mx = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
		for (long i = 0; i < cols; i += 8) {
			__m256i m = tailmask(cols - i);
			__m256 v = _mm256_maskload_ps(row + i, m);
			v = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v, _mm256_castsi256_ps(m));
			nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
			mx = _mm256_max_ps(mx, v);
		}
		float shift = hmax8(mx);
		if (_mm256_movemask_ps(nan)) shift = NAN;
		if (shift == -INFINITY) {
			for (long i = 0; i < cols; i++) row[i] = 0;
			continue;
		}
		__m256 inv = _mm256_set1_ps((float)(1 / exp_shift(row, row, cols, shift)));
		for (long i = 0; i < cols; i += 8) {
			__m256i m = tailmask(cols - i);
			_mm256_maskstore_ps(row + i, m, _mm256_mul_ps(_mm256_maskload_ps(row + i, m), inv));
		}
	}
}

// laprop is optJob's LaProp loop (b1, b2 the folded bias-corrected betas).
AVX2 static void laprop(float *p, const float *g, float *m, float *v, long n,
		float b1, float b2, float lr, float wd, float eps) {
	__m256 vb1 = _mm256_set1_ps(b1), vb2 = _mm256_set1_ps(b2), c1 = _mm256_set1_ps(1 - b1), c2 = _mm256_set1_ps(1 - b2);
	__m256 vlr = _mm256_set1_ps(lr), vwd = _mm256_set1_ps(wd), veps = _mm256_set1_ps(eps);
	for (long i = 0; i < n; i += 8) {
		__m256i k = tailmask(n - i);
		__m256 gi = _mm256_maskload_ps(g + i, k), pi = _mm256_maskload_ps(p + i, k);
		__m256 vi = _mm256_add_ps(_mm256_mul_ps(vb2, _mm256_maskload_ps(v + i, k)), _mm256_mul_ps(c2, _mm256_mul_ps(gi, gi)));
		__m256 gh = _mm256_div_ps(gi, _mm256_add_ps(_mm256_sqrt_ps(vi), veps));
		__m256 mi = _mm256_add_ps(_mm256_mul_ps(vb1, _mm256_maskload_ps(m + i, k)), _mm256_mul_ps(c1, gh));
		pi = _mm256_sub_ps(pi, _mm256_mul_ps(vlr, _mm256_add_ps(mi, _mm256_mul_ps(vwd, pi))));
		_mm256_maskstore_ps(v + i, k, vi);
		_mm256_maskstore_ps(m + i, k, mi);
		_mm256_maskstore_ps(p + i, k, pi);
	}
}

// adamw is optJob's AdamW loop (s1, s2 = 1/(1-beta^t)).
AVX2 static void adamw(float *p, const float *g, float *m, float *v, long n,
		float beta1, float beta2, float s1, float s2, float lr, float wd, float eps) {
	__m256 vb1 = _mm256_set1_ps(beta1), vb2 = _mm256_set1_ps(beta2), c1 = _mm256_set1_ps(1 - beta1), c2 = _mm256_set1_ps(1 - beta2);
	__m256 vs1 = _mm256_set1_ps(s1), vs2 = _mm256_set1_ps(s2);
	__m256 vlr = _mm256_set1_ps(lr), vwd = _mm256_set1_ps(wd), veps = _mm256_set1_ps(eps);
	for (long i = 0; i < n; i += 8) {
		__m256i k = tailmask(n - i);
		__m256 gi = _mm256_maskload_ps(g + i, k), pi = _mm256_maskload_ps(p + i, k);
		__m256 mi = _mm256_add_ps(_mm256_mul_ps(vb1, _mm256_maskload_ps(m + i, k)), _mm256_mul_ps(c1, gi));
		__m256 vi = _mm256_add_ps(_mm256_mul_ps(vb2, _mm256_maskload_ps(v + i, k)), _mm256_mul_ps(c2, _mm256_mul_ps(gi, gi)));
		__m256 den = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vi, vs2)), veps);
		__m256 step = _mm256_add_ps(_mm256_div_ps(_mm256_mul_ps(mi, vs1), den), _mm256_mul_ps(vwd, pi));
		_mm256_maskstore_ps(m + i, k, mi);
		_mm256_maskstore_ps(v + i, k, vi);
		_mm256_maskstore_ps(p + i, k, _mm256_sub_ps(pi, _mm256_mul_ps(vlr, step)));
	}
}
*/
import "C"

import (
	"unsafe"

	"github.com/difftrain/difftrain/compute"
)

// simdKernels names the row kernels in use: "avx2" or "go".
var simdKernels = func() string {
	if C.kern_avx2() != 0 {
		return "avx2"
	}
	return "go"
}()

var avx2 = simdKernels == "avx2"

func fptr(x []float32) *C.float { return (*C.float)(unsafe.Pointer(unsafe.SliceData(x))) }

// capRows applies the tanh soft-cap to x, derivatives to d (see capRowsGo).
func capRows(x, d []float32, c float32) {
	if !avx2 || len(x) == 0 {
		capRowsGo(x, d, c)
		return
	}
	_ = d[len(x)-1]
	C.cap_rows(fptr(x), fptr(d), C.long(len(x)), C.float(c))
}

// softmaxRows is softmaxRowsGo.
func softmaxRows(p []float32, rows, cols int) {
	if !avx2 || rows*cols == 0 {
		softmaxRowsGo(p, rows, cols)
		return
	}
	_ = p[rows*cols-1]
	C.softmax_rows(fptr(p), C.long(rows), C.long(cols))
}

// expShiftTo is expShiftToGo.
func expShiftTo(x, y []float32, shift float32) float64 {
	if !avx2 || len(x) == 0 {
		return expShiftToGo(x, y, shift)
	}
	_ = y[len(x)-1]
	return float64(C.exp_shift(fptr(x), fptr(y), C.long(len(x)), C.float(shift)))
}

// simd runs optJob's loop over [lo, hi) with the AVX2 kernels when
// available and reports whether it did.
func (j *optJob) simd(lo, hi int) bool {
	if !avx2 || hi <= lo {
		return false
	}
	p, g, m, v := fptr(j.p[lo:hi]), fptr(j.g[lo:hi]), fptr(j.m[lo:hi]), fptr(j.v[lo:hi])
	h, n := j.h, C.long(hi-lo)
	switch h.Kind {
	case compute.LaProp:
		C.laprop(p, g, m, v, n, C.float(j.c1), C.float(j.c2), C.float(h.LR), C.float(h.WD), C.float(h.Eps))
	case compute.AdamW:
		C.adamw(p, g, m, v, n, C.float(h.Beta1), C.float(h.Beta2), C.float(j.c1), C.float(j.c2),
			C.float(h.LR), C.float(h.WD), C.float(h.Eps))
	default:
		return false
	}
	return true
}
