// Loading of the CUDA driver, cuBLAS and NVRTC with dlopen, in the manner of
// NVIDIA's go-nvml: one table of function pointers per library, every entry
// resolved once, and thin wrappers that Go calls through cgo.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

// X-macros: name, return type, parameter list.
#define DRIVER_SYMS(X)                                                                  \
	X(cuInit, CUresult, (unsigned))                                                     \
	X(cuDriverGetVersion, CUresult, (int *))                                            \
	X(cuDeviceGetCount, CUresult, (int *))                                              \
	X(cuDeviceGet, CUresult, (CUdevice *, int))                                         \
	X(cuDeviceGetName, CUresult, (char *, int, CUdevice))                               \
	X(cuDeviceGetAttribute, CUresult, (int *, int, CUdevice))                           \
	X(cuDeviceTotalMem_v2, CUresult, (size_t *, CUdevice))                              \
	X(cuDevicePrimaryCtxRetain, CUresult, (CUcontext *, CUdevice))                      \
	X(cuDevicePrimaryCtxRelease_v2, CUresult, (CUdevice))                               \
	X(cuCtxSetCurrent, CUresult, (CUcontext))                                           \
	X(cuCtxSynchronize, CUresult, (void))                                               \
	X(cuGetErrorName, CUresult, (CUresult, const char **))                              \
	X(cuGetErrorString, CUresult, (CUresult, const char **))                            \
	X(cuStreamCreate, CUresult, (CUstream *, unsigned))                                 \
	X(cuStreamDestroy_v2, CUresult, (CUstream))                                         \
	X(cuStreamSynchronize, CUresult, (CUstream))                                        \
	X(cuStreamWaitEvent, CUresult, (CUstream, CUevent, unsigned))                       \
	X(cuEventCreate, CUresult, (CUevent *, unsigned))                                   \
	X(cuEventDestroy_v2, CUresult, (CUevent))                                           \
	X(cuEventRecord, CUresult, (CUevent, CUstream))                                     \
	X(cuEventSynchronize, CUresult, (CUevent))                                          \
	X(cuEventQuery, CUresult, (CUevent))                                                \
	X(cuMemAlloc_v2, CUresult, (CUdeviceptr *, size_t))                                 \
	X(cuMemFree_v2, CUresult, (CUdeviceptr))                                            \
	X(cuMemGetInfo_v2, CUresult, (size_t *, size_t *))                                  \
	X(cuMemAllocHost_v2, CUresult, (void **, size_t))                                   \
	X(cuMemFreeHost, CUresult, (void *))                                                \
	X(cuMemcpyHtoDAsync_v2, CUresult, (CUdeviceptr, const void *, size_t, CUstream))    \
	X(cuMemcpyDtoHAsync_v2, CUresult, (void *, CUdeviceptr, size_t, CUstream))          \
	X(cuMemcpyDtoDAsync_v2, CUresult, (CUdeviceptr, CUdeviceptr, size_t, CUstream))     \
	X(cuMemsetD32Async, CUresult, (CUdeviceptr, unsigned, size_t, CUstream))            \
	X(cuModuleLoadData, CUresult, (CUmodule *, const void *))                           \
	X(cuModuleUnload, CUresult, (CUmodule))                                             \
	X(cuModuleGetFunction, CUresult, (CUfunction *, CUmodule, const char *))            \
	X(cuLaunchKernel, CUresult,                                                         \
	  (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, \
	   CUstream, void **, void **))

#define CUBLAS_SYMS(X)                                                                   \
	X(cublasCreate_v2, cublasStatus_t, (cublasHandle_t *))                               \
	X(cublasDestroy_v2, cublasStatus_t, (cublasHandle_t))                                \
	X(cublasSetStream_v2, cublasStatus_t, (cublasHandle_t, CUstream))                    \
	X(cublasSetMathMode, cublasStatus_t, (cublasHandle_t, int))                          \
	X(cublasGetVersion_v2, cublasStatus_t, (cublasHandle_t, int *))                      \
	X(cublasSgemm_v2, cublasStatus_t,                                                    \
	  (cublasHandle_t, int, int, int, int, int, const float *, const float *, int,       \
	   const float *, int, const float *, float *, int))                                 \
	X(cublasSgemmStridedBatched, cublasStatus_t,                                         \
	  (cublasHandle_t, int, int, int, int, int, const float *, const float *, int,       \
	   long long, const float *, int, long long, const float *, float *, int, long long, \
	   int))                                                                             \
	X(cublasGemmEx, cublasStatus_t,                                                      \
	  (cublasHandle_t, int, int, int, int, int, const void *, const void *, int, int,    \
	   const void *, int, int, const void *, void *, int, int, int, int))                \
	X(cublasGemmStridedBatchedEx, cublasStatus_t,                                        \
	  (cublasHandle_t, int, int, int, int, int, const void *, const void *, int, int,    \
	   long long, const void *, int, int, long long, const void *, void *, int, int,     \
	   long long, int, int, int))

#define NVRTC_SYMS(X)                                                                   \
	X(nvrtcVersion, nvrtcResult, (int *, int *))                                        \
	X(nvrtcGetErrorString, const char *, (nvrtcResult))                                 \
	X(nvrtcCreateProgram, nvrtcResult,                                                  \
	  (nvrtcProgram *, const char *, const char *, int, const char *const *,            \
	   const char *const *))                                                            \
	X(nvrtcDestroyProgram, nvrtcResult, (nvrtcProgram *))                               \
	X(nvrtcCompileProgram, nvrtcResult, (nvrtcProgram, int, const char *const *))       \
	X(nvrtcGetProgramLogSize, nvrtcResult, (nvrtcProgram, size_t *))                    \
	X(nvrtcGetProgramLog, nvrtcResult, (nvrtcProgram, char *))                          \
	X(nvrtcGetPTXSize, nvrtcResult, (nvrtcProgram, size_t *))                           \
	X(nvrtcGetPTX, nvrtcResult, (nvrtcProgram, char *))                                 \
	X(nvrtcGetCUBINSize, nvrtcResult, (nvrtcProgram, size_t *))                         \
	X(nvrtcGetCUBIN, nvrtcResult, (nvrtcProgram, char *))

// Optional NVRTC entry points (11.2 and later); absence is not an error.
#define NVRTC_OPT_SYMS(X)                                \
	X(nvrtcGetNumSupportedArchs, nvrtcResult, (int *)) \
	X(nvrtcGetSupportedArchs, nvrtcResult, (int *))

#define DECL(name, ret, args) static ret(*p_##name) args;
DRIVER_SYMS(DECL)
CUBLAS_SYMS(DECL)
NVRTC_SYMS(DECL)
NVRTC_OPT_SYMS(DECL)

struct sym {
	const char *name;
	void **ptr;
};

#define ENTRY(name, ret, args) {#name, (void **)&p_##name},
static struct sym driver_syms[] = {DRIVER_SYMS(ENTRY)};
static struct sym cublas_syms[] = {CUBLAS_SYMS(ENTRY)};
static struct sym nvrtc_syms[] = {NVRTC_SYMS(ENTRY)};
static struct sym nvrtc_opt_syms[] = {NVRTC_OPT_SYMS(ENTRY)};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void *handles[3];

static struct sym *table(int lib, int *n) {
	switch (lib) {
	case DT_DRIVER:
		*n = COUNT(driver_syms);
		return driver_syms;
	case DT_CUBLAS:
		*n = COUNT(cublas_syms);
		return cublas_syms;
	case DT_NVRTC:
		*n = COUNT(nvrtc_syms);
		return nvrtc_syms;
	}
	*n = 0;
	return NULL;
}

int dt_nsyms(int lib) {
	int n;
	table(lib, &n);
	return n;
}

const char *dt_symname(int lib, int i) {
	int n;
	struct sym *t = table(lib, &n);
	return (i >= 0 && i < n) ? t[i].name : NULL;
}

int dt_loaded(int lib) { return lib >= 0 && lib < 3 && handles[lib] != NULL; }

int dt_open(int lib, const char *path, int keep, char *err, size_t errlen) {
	int n, i;
	struct sym *t = table(lib, &n);
	if (t == NULL) {
		snprintf(err, errlen, "unknown library kind %d", lib);
		return -1;
	}
	if (keep && handles[lib] != NULL) return 0;
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *e = dlerror();
		snprintf(err, errlen, "%s", e ? e : "dlopen failed");
		return -1;
	}
	for (i = 0; i < n; i++) {
		void *p = dlsym(h, t[i].name);
		if (p == NULL) {
			snprintf(err, errlen, "%s", t[i].name);
			dlclose(h);
			return -2;
		}
		if (keep) *t[i].ptr = p;
	}
	if (!keep) {
		dlclose(h);
		return 0;
	}
	if (lib == DT_NVRTC) {
		for (i = 0; i < COUNT(nvrtc_opt_syms); i++) *nvrtc_opt_syms[i].ptr = dlsym(h, nvrtc_opt_syms[i].name);
	}
	handles[lib] = h;
	return 0;
}

// ---- driver ----

CUresult dt_cuInit(void) { return p_cuInit(0); }
CUresult dt_cuDriverGetVersion(int *v) { return p_cuDriverGetVersion(v); }
CUresult dt_cuDeviceGetCount(int *n) { return p_cuDeviceGetCount(n); }
CUresult dt_cuDeviceGet(CUdevice *d, int ordinal) { return p_cuDeviceGet(d, ordinal); }
CUresult dt_cuDeviceGetName(char *name, int len, CUdevice d) { return p_cuDeviceGetName(name, len, d); }
CUresult dt_cuDeviceGetAttribute(int *v, int attr, CUdevice d) { return p_cuDeviceGetAttribute(v, attr, d); }
CUresult dt_cuDeviceTotalMem(size_t *bytes, CUdevice d) { return p_cuDeviceTotalMem_v2(bytes, d); }
CUresult dt_cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) { return p_cuDevicePrimaryCtxRetain(c, d); }
CUresult dt_cuDevicePrimaryCtxRelease(CUdevice d) { return p_cuDevicePrimaryCtxRelease_v2(d); }

const char *dt_cuErrorName(CUresult r) {
	const char *s = NULL;
	if (p_cuGetErrorName == NULL || p_cuGetErrorName(r, &s) != 0 || s == NULL) return "CUDA_ERROR_UNKNOWN";
	return s;
}

const char *dt_cuErrorString(CUresult r) {
	const char *s = NULL;
	if (p_cuGetErrorString == NULL || p_cuGetErrorString(r, &s) != 0 || s == NULL) return "unknown error";
	return s;
}

// bind makes ctx current on the calling OS thread. It is not cached: a
// closed backend's context may be destroyed and a new one get the same
// address, and cuCtxSetCurrent is cheap.
static CUresult bind(CUcontext ctx) { return p_cuCtxSetCurrent(ctx); }

#define BIND(ctx)                         \
	do {                                  \
		CUresult br_ = bind(ctx);         \
		if (br_ != 0) return br_;         \
	} while (0)

CUresult dt_ctxSync(CUcontext ctx) { BIND(ctx); return p_cuCtxSynchronize(); }
CUresult dt_streamCreate(CUcontext ctx, CUstream *s) { BIND(ctx); return p_cuStreamCreate(s, 1 /* non-blocking */); }
CUresult dt_streamDestroy(CUcontext ctx, CUstream s) { BIND(ctx); return p_cuStreamDestroy_v2(s); }
CUresult dt_streamSync(CUcontext ctx, CUstream s) { BIND(ctx); return p_cuStreamSynchronize(s); }
CUresult dt_streamWaitEvent(CUcontext ctx, CUstream s, CUevent e) { BIND(ctx); return p_cuStreamWaitEvent(s, e, 0); }
CUresult dt_eventCreate(CUcontext ctx, CUevent *e) { BIND(ctx); return p_cuEventCreate(e, 2 /* disable timing */); }
CUresult dt_eventDestroy(CUcontext ctx, CUevent e) { BIND(ctx); return p_cuEventDestroy_v2(e); }
CUresult dt_eventRecord(CUcontext ctx, CUevent e, CUstream s) { BIND(ctx); return p_cuEventRecord(e, s); }
CUresult dt_eventSync(CUcontext ctx, CUevent e) { BIND(ctx); return p_cuEventSynchronize(e); }
CUresult dt_eventQuery(CUcontext ctx, CUevent e) { BIND(ctx); return p_cuEventQuery(e); }
CUresult dt_memAlloc(CUcontext ctx, CUdeviceptr *p, size_t bytes) { BIND(ctx); return p_cuMemAlloc_v2(p, bytes); }
CUresult dt_memFree(CUcontext ctx, CUdeviceptr p) { BIND(ctx); return p_cuMemFree_v2(p); }
CUresult dt_memGetInfo(CUcontext ctx, size_t *free, size_t *total) { BIND(ctx); return p_cuMemGetInfo_v2(free, total); }
CUresult dt_memAllocHost(CUcontext ctx, void **p, size_t bytes) { BIND(ctx); return p_cuMemAllocHost_v2(p, bytes); }
CUresult dt_memFreeHost(CUcontext ctx, void *p) { BIND(ctx); return p_cuMemFreeHost(p); }

CUresult dt_memcpyHtoD(CUcontext ctx, CUdeviceptr dst, const void *src, size_t bytes, CUstream s) {
	BIND(ctx);
	return p_cuMemcpyHtoDAsync_v2(dst, src, bytes, s);
}

CUresult dt_memcpyDtoH(CUcontext ctx, void *dst, CUdeviceptr src, size_t bytes, CUstream s) {
	BIND(ctx);
	return p_cuMemcpyDtoHAsync_v2(dst, src, bytes, s);
}

CUresult dt_memcpyDtoD(CUcontext ctx, CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s) {
	BIND(ctx);
	return p_cuMemcpyDtoDAsync_v2(dst, src, bytes, s);
}

CUresult dt_memsetD32(CUcontext ctx, CUdeviceptr dst, unsigned v, size_t n, CUstream s) {
	BIND(ctx);
	return p_cuMemsetD32Async(dst, v, n, s);
}

CUresult dt_moduleLoadData(CUcontext ctx, CUmodule *m, const void *image) { BIND(ctx); return p_cuModuleLoadData(m, image); }
CUresult dt_moduleUnload(CUcontext ctx, CUmodule m) { BIND(ctx); return p_cuModuleUnload(m); }

CUresult dt_moduleGetFunction(CUcontext ctx, CUfunction *f, CUmodule m, const char *name) {
	BIND(ctx);
	return p_cuModuleGetFunction(f, m, name);
}

#define MAX_ARGS 32

CUresult dt_launch(CUcontext ctx, CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                   unsigned bx, unsigned by, unsigned bz, unsigned smem, CUstream s,
                   unsigned long long *args, int nargs) {
	void *params[MAX_ARGS];
	if (nargs > MAX_ARGS) return 1; // CUDA_ERROR_INVALID_VALUE
	for (int i = 0; i < nargs; i++) params[i] = &args[i];
	BIND(ctx);
	return p_cuLaunchKernel(f, gx, gy, gz, bx, by, bz, smem, s, params, NULL);
}

// ---- cuBLAS ----

cublasStatus_t dt_cublasCreate(CUcontext ctx, cublasHandle_t *h) { BIND(ctx); return p_cublasCreate_v2(h); }
cublasStatus_t dt_cublasDestroy(CUcontext ctx, cublasHandle_t h) { BIND(ctx); return p_cublasDestroy_v2(h); }
cublasStatus_t dt_cublasSetStream(CUcontext ctx, cublasHandle_t h, CUstream s) { BIND(ctx); return p_cublasSetStream_v2(h, s); }
cublasStatus_t dt_cublasSetMathMode(CUcontext ctx, cublasHandle_t h, int mode) { BIND(ctx); return p_cublasSetMathMode(h, mode); }
cublasStatus_t dt_cublasGetVersion(cublasHandle_t h, int *v) { return p_cublasGetVersion_v2(h, v); }

#define CUDA_R_32F 0
#define CUBLAS_COMPUTE_32F 68
#define CUBLAS_GEMM_DEFAULT (-1)

cublasStatus_t dt_sgemm(CUcontext ctx, cublasHandle_t h, int ta, int tb, int m, int n, int k,
                        float alpha, CUdeviceptr a, int lda, long long sa,
                        CUdeviceptr b, int ldb, long long sb, float beta,
                        CUdeviceptr c, int ldc, long long sc, int batch) {
	BIND(ctx);
	if (batch <= 1)
		return p_cublasSgemm_v2(h, ta, tb, m, n, k, &alpha, (const float *)a, lda, (const float *)b, ldb,
		                        &beta, (float *)c, ldc);
	return p_cublasSgemmStridedBatched(h, ta, tb, m, n, k, &alpha, (const float *)a, lda, sa,
	                                   (const float *)b, ldb, sb, &beta, (float *)c, ldc, sc, batch);
}

cublasStatus_t dt_gemmEx(CUcontext ctx, cublasHandle_t h, int ta, int tb, int m, int n, int k,
                         float alpha, CUdeviceptr a, int atype, int lda, long long sa,
                         CUdeviceptr b, int btype, int ldb, long long sb, float beta,
                         CUdeviceptr c, int ldc, long long sc, int batch) {
	BIND(ctx);
	if (batch <= 1)
		return p_cublasGemmEx(h, ta, tb, m, n, k, &alpha, (const void *)a, atype, lda, (const void *)b,
		                      btype, ldb, &beta, (void *)c, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
		                      CUBLAS_GEMM_DEFAULT);
	return p_cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, &alpha, (const void *)a, atype, lda, sa,
	                                    (const void *)b, btype, ldb, sb, &beta, (void *)c, CUDA_R_32F,
	                                    ldc, sc, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

// ---- NVRTC ----

nvrtcResult dt_nvrtcVersion(int *major, int *minor) { return p_nvrtcVersion(major, minor); }

const char *dt_nvrtcErrorString(nvrtcResult r) {
	const char *s = p_nvrtcGetErrorString ? p_nvrtcGetErrorString(r) : NULL;
	return s ? s : "unknown NVRTC error";
}

int dt_nvrtcHasSupportedArchs(void) { return p_nvrtcGetNumSupportedArchs != NULL && p_nvrtcGetSupportedArchs != NULL; }

nvrtcResult dt_nvrtcSupportedArchs(int *archs, int max, int *n) {
	int num = 0;
	nvrtcResult r = p_nvrtcGetNumSupportedArchs(&num);
	if (r != 0) return r;
	*n = num;
	if (num > max) return 0;
	return p_nvrtcGetSupportedArchs(archs);
}

nvrtcResult dt_nvrtcCompile(const char *src, const char *name, const char **opts, int nopts,
                            int ptx, char **out, size_t *outlen, char **log) {
	nvrtcProgram prog = NULL;
	size_t n = 0;
	*out = NULL;
	*outlen = 0;
	*log = NULL;
	nvrtcResult r = p_nvrtcCreateProgram(&prog, src, name, 0, NULL, NULL);
	if (r != 0) return r;
	nvrtcResult cr = p_nvrtcCompileProgram(prog, nopts, opts);
	if (p_nvrtcGetProgramLogSize(prog, &n) == 0 && n > 1) {
		*log = malloc(n);
		if (*log != NULL && p_nvrtcGetProgramLog(prog, *log) != 0) {
			free(*log);
			*log = NULL;
		}
	}
	if (cr != 0) {
		p_nvrtcDestroyProgram(&prog);
		return cr;
	}
	r = ptx ? p_nvrtcGetPTXSize(prog, &n) : p_nvrtcGetCUBINSize(prog, &n);
	if (r == 0) {
		*out = malloc(n ? n : 1);
		if (*out == NULL) {
			r = 1; // NVRTC_ERROR_OUT_OF_MEMORY
		} else {
			r = ptx ? p_nvrtcGetPTX(prog, *out) : p_nvrtcGetCUBIN(prog, *out);
			*outlen = n;
			if (r != 0) {
				free(*out);
				*out = NULL;
				*outlen = 0;
			}
		}
	}
	p_nvrtcDestroyProgram(&prog);
	return r;
}
