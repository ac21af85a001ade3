// A CPU emulation of the parts of the CUDA driver and cuBLAS that the
// backend uses, for testing the backend end to end on machines without a
// GPU (see emu_test.go). Built with g++ into a libcuda.so.1 and a
// libcublas.so.12 in a temporary directory.
//
// "Device" memory is host memory; every call runs synchronously. Kernels are
// kernels.cu itself, compiled as C++ under the shim below: each launch runs
// its blocks one after another, each CUDA thread a fiber (ucontext) on one OS
// thread, switched round-robin at every __syncthreads, so barriers are real:
// a thread that reads shared memory before the barrier that orders it sees
// stale data, as on a GPU. A block whose threads leave a kernel while others
// wait at a barrier fails the launch. Warp shuffles go through a block-wide
// exchange buffer, which is exact for code where every thread of the block
// reaches the shuffle (true of kernels.cu's block reductions). The cuBLAS
// GEMMs are the reference column-major definitions, with bf16 operands
// widened and, in TF32 math mode, fp32 operands rounded to TF32.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ucontext.h>

#include <type_traits>
#include <utility>
#include <vector>

// ---- the kernel shim ----
struct emu_dim3 {
	unsigned x, y, z;
};
static emu_dim3 threadIdx, blockIdx, blockDim, gridDim;
static ucontext_t emu_sched;     // the launch loop
static ucontext_t *emu_self;     // the running fiber

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
static inline void __syncthreads() { swapcontext(emu_self, &emu_sched); }
static inline float __int_as_float(int v) {
	float f;
	memcpy(&f, &v, 4);
	return f;
}
static inline unsigned __float_as_uint(float f) {
	unsigned u;
	memcpy(&u, &f, 4);
	return u;
}
static double emu_xchg[1024];
template <typename T> static T __shfl_xor_sync(unsigned, T v, int o) {
	unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
	emu_xchg[tid] = (double)v;
	__syncthreads();
	T r = (T)emu_xchg[tid ^ (unsigned)o];
	__syncthreads();
	return r;
}

#include "../../kernels.cu"

// ---- kernel table ----
template <typename... A, size_t... I>
static void emu_call(void (*f)(A...), void **p, std::index_sequence<I...>) {
	f(*(std::remove_cv_t<std::remove_reference_t<A>> *)p[I]...);
}
template <typename... A> static void emu_call(void (*f)(A...), void **p) {
	emu_call(f, p, std::index_sequence_for<A...>{});
}

struct emu_kernel {
	const char *name;
	void (*call)(void **);
};
#define K(n) {#n, [](void **p) { emu_call(n, p); }},
static emu_kernel emu_kernels[] = {
	K(k_scale) K(k_axpy) K(k_add_bias) K(k_relu_sq) K(k_relu_sq_back) K(k_sumsq_part) K(k_sum_final)
	K(k_col_sum) K(k_rmsnorm) K(k_rmsnorm_back) K(k_rope) K(k_embedding) K(k_embedding_back)
	K(k_attn_softmax) K(k_attn_sink_add) K(k_attn_softmax_back) K(k_gidd_loss) K(k_laprop) K(k_adamw)
	K(k_f32_to_bf16) K(k_q8_block)
};

typedef int CUresult;
#define API extern "C" __attribute__((visibility("default")))

// ---- driver ----
API CUresult cuInit(unsigned) { return 0; }
API CUresult cuDriverGetVersion(int *v) { *v = 12040; return 0; }
API CUresult cuDeviceGetCount(int *n) { *n = 1; return 0; }
API CUresult cuDeviceGet(int *d, int o) { *d = o; return o == 0 ? 0 : 101; }
API CUresult cuDeviceGetName(char *name, int len, int) {
	strncpy(name, "CPU emulator", len);
	return 0;
}
API CUresult cuDeviceGetAttribute(int *v, int attr, int) {
	switch (attr) {
	case 16: *v = 4; break; // SMs: small grids, so grid-stride loops really stride
	case 75: *v = 9; break;
	case 76: *v = 0; break;
	default: *v = 0;
	}
	return 0;
}
API CUresult cuDeviceTotalMem_v2(size_t *b, int) { *b = (size_t)1 << 34; return 0; }
static int emu_ctx;
API CUresult cuDevicePrimaryCtxRetain(void **c, int) { *c = &emu_ctx; return 0; }
API CUresult cuDevicePrimaryCtxRelease_v2(int) { return 0; }
API CUresult cuCtxSetCurrent(void *) { return 0; }
API CUresult cuCtxSynchronize(void) { return 0; }
API CUresult cuGetErrorName(CUresult, const char **s) { *s = "CUDA_ERROR_EMULATOR"; return 0; }
API CUresult cuGetErrorString(CUresult, const char **s) { *s = "emulator error"; return 0; }
static int emu_handle;
API CUresult cuStreamCreate(void **s, unsigned) { *s = &emu_handle; return 0; }
API CUresult cuStreamDestroy_v2(void *) { return 0; }
API CUresult cuStreamSynchronize(void *) { return 0; }
API CUresult cuStreamWaitEvent(void *, void *, unsigned) { return 0; }
API CUresult cuEventCreate(void **e, unsigned) { *e = &emu_handle; return 0; }
API CUresult cuEventDestroy_v2(void *) { return 0; }
API CUresult cuEventRecord(void *, void *) { return 0; }
API CUresult cuEventSynchronize(void *) { return 0; }
API CUresult cuEventQuery(void *) { return 0; }
API CUresult cuMemAlloc_v2(unsigned long long *p, size_t n) {
	void *m = malloc(n ? n : 1);
	if (!m) return 2;
	memset(m, 0xff, n); // NaN garbage, as fresh device memory may hold
	*p = (unsigned long long)(uintptr_t)m;
	return 0;
}
API CUresult cuMemFree_v2(unsigned long long p) { free((void *)(uintptr_t)p); return 0; }
API CUresult cuMemGetInfo_v2(size_t *f, size_t *t) { *f = *t = (size_t)1 << 34; return 0; }
API CUresult cuMemAllocHost_v2(void **p, size_t n) { *p = malloc(n ? n : 1); return *p ? 0 : 2; }
API CUresult cuMemFreeHost(void *p) { free(p); return 0; }
API CUresult cuMemcpyHtoDAsync_v2(unsigned long long d, const void *s, size_t n, void *) {
	memcpy((void *)(uintptr_t)d, s, n);
	return 0;
}
API CUresult cuMemcpyDtoHAsync_v2(void *d, unsigned long long s, size_t n, void *) {
	memcpy(d, (void *)(uintptr_t)s, n);
	return 0;
}
API CUresult cuMemcpyDtoDAsync_v2(unsigned long long d, unsigned long long s, size_t n, void *) {
	memmove((void *)(uintptr_t)d, (void *)(uintptr_t)s, n);
	return 0;
}
API CUresult cuMemsetD32Async(unsigned long long d, unsigned v, size_t n, void *) {
	unsigned *p = (unsigned *)(uintptr_t)d;
	for (size_t i = 0; i < n; i++) p[i] = v;
	return 0;
}
API CUresult cuModuleLoadData(void **m, const void *img) {
	*m = &emu_handle;
	return img ? 0 : 1;
}
API CUresult cuModuleUnload(void *) { return 0; }
API CUresult cuModuleGetFunction(void **f, void *, const char *name) {
	for (auto &k : emu_kernels)
		if (strcmp(k.name, name) == 0) {
			*f = &k;
			return 0;
		}
	return 500; // CUDA_ERROR_NOT_FOUND
}

struct emu_fiber {
	ucontext_t ctx;
	emu_dim3 tid;
	bool done;
	char *stack;
};
static const size_t emu_stack_size = 64 << 10;
static std::vector<emu_fiber> emu_fibers;
static emu_kernel *emu_cur_kernel;
static void **emu_cur_params;
static emu_fiber *emu_cur_fiber;

static void emu_fiber_main() {
	emu_cur_kernel->call(emu_cur_params);
	emu_cur_fiber->done = true; // returns to uc_link, the launch loop
}

API CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                            unsigned, void *, void **params, void **) {
	emu_kernel *k = (emu_kernel *)f;
	unsigned nt = bx * by * bz;
	if (nt == 0 || nt > 1024 || gx == 0 || gy == 0 || gz == 0) return 1; // CUDA_ERROR_INVALID_VALUE
	blockDim = {bx, by, bz};
	gridDim = {gx, gy, gz};
	emu_cur_kernel = k;
	emu_cur_params = params;
	while (emu_fibers.size() < nt) {
		emu_fiber fb{};
		fb.stack = (char *)malloc(emu_stack_size);
		emu_fibers.push_back(fb);
	}
	for (unsigned z = 0; z < gz; z++)
		for (unsigned y = 0; y < gy; y++)
			for (unsigned x = 0; x < gx; x++) {
				blockIdx = {x, y, z};
				for (unsigned t = 0; t < nt; t++) {
					emu_fiber &fb = emu_fibers[t];
					fb.tid = {t % bx, (t / bx) % by, t / (bx * by)};
					fb.done = false;
					getcontext(&fb.ctx);
					fb.ctx.uc_stack.ss_sp = fb.stack;
					fb.ctx.uc_stack.ss_size = emu_stack_size;
					fb.ctx.uc_link = &emu_sched;
					makecontext(&fb.ctx, emu_fiber_main, 0);
				}
				// Rounds: every live thread runs to its next barrier or its end.
				for (;;) {
					unsigned finished = 0, waiting = 0;
					for (unsigned t = 0; t < nt; t++) {
						emu_fiber &fb = emu_fibers[t];
						if (fb.done) continue;
						emu_cur_fiber = &fb;
						emu_self = &fb.ctx;
						threadIdx = fb.tid;
						swapcontext(&emu_sched, &fb.ctx);
						if (fb.done)
							finished++;
						else
							waiting++;
					}
					if (waiting == 0) break;
					if (finished > 0) return 715; // divergent barrier: CUDA_ERROR_ILLEGAL_INSTRUCTION
				}
			}
	return 0;
}

// ---- cuBLAS ----
API int cublasCreate_v2(void **h) { *h = &emu_handle; return 0; }
API int cublasDestroy_v2(void *) { return 0; }
API int cublasSetStream_v2(void *, void *) { return 0; }
static int emu_math_mode;
API int cublasSetMathMode(void *, int mode) { emu_math_mode = mode; return 0; }
API int cublasGetVersion_v2(void *, int *v) { *v = 120000; return 0; }

static float emu_load(const void *p, int type, long long i) {
	if (type == 14) {
		unsigned u = (unsigned)((const uint16_t *)p)[i] << 16;
		return __int_as_float((int)u);
	}
	float f = ((const float *)p)[i];
	if (emu_math_mode == 3) { // TF32: 10 mantissa bits, round to nearest even
		unsigned u = __float_as_uint(f);
		u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
		f = __int_as_float((int)u);
	}
	return f;
}

// Column-major C = alpha·op(A)·op(B) + beta·C, C m x n, op(A) m x k.
static int emu_gemm(int ta, int tb, int m, int n, int k, float alpha, const void *a, int at, int lda, long long sa,
                    const void *b, int bt, int ldb, long long sb, float beta, float *c, int ldc, long long sc,
                    int batch) {
	if (m < 0 || n < 0 || k < 0 || batch < 1) return 7;
	if (lda < (ta ? (k > 1 ? k : 1) : (m > 1 ? m : 1)) || ldb < (tb ? (n > 1 ? n : 1) : (k > 1 ? k : 1)) ||
	    ldc < (m > 1 ? m : 1))
		return 7; // CUBLAS_STATUS_INVALID_VALUE, as cuBLAS checks
	for (int q = 0; q < batch; q++)
		for (int j = 0; j < n; j++)
			for (int i = 0; i < m; i++) {
				float acc = 0;
				for (int l = 0; l < k; l++) {
					float x = emu_load(a, at, q * sa + (ta ? l + (long long)i * lda : i + (long long)l * lda));
					float y = emu_load(b, bt, q * sb + (tb ? j + (long long)l * ldb : l + (long long)j * ldb));
					acc += x * y;
				}
				float *cij = c + q * sc + i + (long long)j * ldc;
				*cij = alpha * acc + (beta == 0 ? 0 : beta * *cij);
			}
	return 0;
}

API int cublasSgemm_v2(void *, int ta, int tb, int m, int n, int k, const float *alpha, const float *a, int lda,
                       const float *b, int ldb, const float *beta, float *c, int ldc) {
	return emu_gemm(ta, tb, m, n, k, *alpha, a, 0, lda, 0, b, 0, ldb, 0, *beta, c, ldc, 0, 1);
}
API int cublasSgemmStridedBatched(void *, int ta, int tb, int m, int n, int k, const float *alpha, const float *a,
                                  int lda, long long sa, const float *b, int ldb, long long sb, const float *beta,
                                  float *c, int ldc, long long sc, int batch) {
	return emu_gemm(ta, tb, m, n, k, *alpha, a, 0, lda, sa, b, 0, ldb, sb, *beta, c, ldc, sc, batch);
}
API int cublasGemmEx(void *, int ta, int tb, int m, int n, int k, const void *alpha, const void *a, int at, int lda,
                     const void *b, int bt, int ldb, const void *beta, void *c, int ct, int ldc, int comp, int) {
	if (ct != 0 || comp != 68) return 15; // CUBLAS_STATUS_NOT_SUPPORTED
	return emu_gemm(ta, tb, m, n, k, *(const float *)alpha, a, at, lda, 0, b, bt, ldb, 0, *(const float *)beta,
	                (float *)c, ldc, 0, 1);
}
API int cublasGemmStridedBatchedEx(void *, int ta, int tb, int m, int n, int k, const void *alpha, const void *a,
                                   int at, int lda, long long sa, const void *b, int bt, int ldb, long long sb,
                                   const void *beta, void *c, int ct, int ldc, long long sc, int batch, int comp,
                                   int) {
	if (ct != 0 || comp != 68) return 15;
	return emu_gemm(ta, tb, m, n, k, *(const float *)alpha, a, at, lda, sa, b, bt, ldb, sb, *(const float *)beta,
	                (float *)c, ldc, sc, batch);
}
