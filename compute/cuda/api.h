// Minimal declarations of the parts of the CUDA driver API, cuBLAS and NVRTC
// that the backend uses. No CUDA header is needed at build time: every entry
// point is resolved with dlsym when the libraries are loaded (see api.c).
#ifndef DIFFTRAIN_CUDA_API_H
#define DIFFTRAIN_CUDA_API_H

#include <stddef.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUstream;
typedef void *CUevent;
typedef unsigned long long CUdeviceptr;

typedef int cublasStatus_t;
typedef void *cublasHandle_t;

typedef int nvrtcResult;
typedef void *nvrtcProgram;

// Library kinds for dt_open / dt_missing.
enum { DT_DRIVER = 0, DT_CUBLAS = 1, DT_NVRTC = 2 };

// dt_open dlopens path and resolves every symbol of library kind lib. On
// failure it returns -1 with the dlerror text in err, or -2 with the name of
// the first missing symbol in err. It returns 0 on success (also when the
// library was already loaded). With keep == 0 it only checks the library and
// closes it again, leaving the loaded tables untouched.
int dt_open(int lib, const char *path, int keep, char *err, size_t errlen);
// dt_nsyms and dt_symname list the symbols of a library kind (for tests).
int dt_nsyms(int lib);
const char *dt_symname(int lib, int i);
int dt_loaded(int lib);

// Driver.
CUresult dt_cuInit(void);
CUresult dt_cuDriverGetVersion(int *v);
CUresult dt_cuDeviceGetCount(int *n);
CUresult dt_cuDeviceGet(CUdevice *d, int ordinal);
CUresult dt_cuDeviceGetName(char *name, int len, CUdevice d);
CUresult dt_cuDeviceGetAttribute(int *v, int attr, CUdevice d);
CUresult dt_cuDeviceTotalMem(size_t *bytes, CUdevice d);
CUresult dt_cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d);
CUresult dt_cuDevicePrimaryCtxRelease(CUdevice d);
const char *dt_cuErrorName(CUresult r);
const char *dt_cuErrorString(CUresult r);

// Everything below binds ctx to the calling thread first (cuCtxSetCurrent),
// because Go may move a goroutine to another OS thread between two calls.
CUresult dt_ctxSync(CUcontext ctx);
CUresult dt_streamCreate(CUcontext ctx, CUstream *s);
CUresult dt_streamDestroy(CUcontext ctx, CUstream s);
CUresult dt_streamSync(CUcontext ctx, CUstream s);
CUresult dt_streamWaitEvent(CUcontext ctx, CUstream s, CUevent e);
CUresult dt_eventCreate(CUcontext ctx, CUevent *e);
CUresult dt_eventDestroy(CUcontext ctx, CUevent e);
CUresult dt_eventRecord(CUcontext ctx, CUevent e, CUstream s);
CUresult dt_eventSync(CUcontext ctx, CUevent e);
CUresult dt_eventQuery(CUcontext ctx, CUevent e);
CUresult dt_memAlloc(CUcontext ctx, CUdeviceptr *p, size_t bytes);
CUresult dt_memFree(CUcontext ctx, CUdeviceptr p);
CUresult dt_memGetInfo(CUcontext ctx, size_t *free, size_t *total);
CUresult dt_memAllocHost(CUcontext ctx, void **p, size_t bytes);
CUresult dt_memFreeHost(CUcontext ctx, void *p);
CUresult dt_memcpyHtoD(CUcontext ctx, CUdeviceptr dst, const void *src, size_t bytes, CUstream s);
CUresult dt_memcpyDtoH(CUcontext ctx, void *dst, CUdeviceptr src, size_t bytes, CUstream s);
CUresult dt_memcpyDtoD(CUcontext ctx, CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s);
CUresult dt_memsetD32(CUcontext ctx, CUdeviceptr dst, unsigned v, size_t n, CUstream s);
CUresult dt_moduleLoadData(CUcontext ctx, CUmodule *m, const void *image);
CUresult dt_moduleUnload(CUcontext ctx, CUmodule m);
CUresult dt_moduleGetFunction(CUcontext ctx, CUfunction *f, CUmodule m, const char *name);
// dt_launch passes args[0..nargs) as the kernel parameters: each parameter
// occupies one 8-byte slot (4-byte ints and floats in its low bytes).
CUresult dt_launch(CUcontext ctx, CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                   unsigned bx, unsigned by, unsigned bz, unsigned smem, CUstream s,
                   unsigned long long *args, int nargs);

// cuBLAS (column-major, as cuBLAS is).
cublasStatus_t dt_cublasCreate(CUcontext ctx, cublasHandle_t *h);
cublasStatus_t dt_cublasDestroy(CUcontext ctx, cublasHandle_t h);
cublasStatus_t dt_cublasSetStream(CUcontext ctx, cublasHandle_t h, CUstream s);
cublasStatus_t dt_cublasSetMathMode(CUcontext ctx, cublasHandle_t h, int mode);
cublasStatus_t dt_cublasGetVersion(cublasHandle_t h, int *v);
cublasStatus_t dt_sgemm(CUcontext ctx, cublasHandle_t h, int ta, int tb, int m, int n, int k,
                        float alpha, CUdeviceptr a, int lda, long long sa,
                        CUdeviceptr b, int ldb, long long sb, float beta,
                        CUdeviceptr c, int ldc, long long sc, int batch);
// dt_gemmEx multiplies bf16 (or fp32, atype/btype) operands with fp32
// accumulation and an fp32 result.
cublasStatus_t dt_gemmEx(CUcontext ctx, cublasHandle_t h, int ta, int tb, int m, int n, int k,
                         float alpha, CUdeviceptr a, int atype, int lda, long long sa,
                         CUdeviceptr b, int btype, int ldb, long long sb, float beta,
                         CUdeviceptr c, int ldc, long long sc, int batch);

// NVRTC.
nvrtcResult dt_nvrtcVersion(int *major, int *minor);
const char *dt_nvrtcErrorString(nvrtcResult r);
int dt_nvrtcHasSupportedArchs(void);
nvrtcResult dt_nvrtcSupportedArchs(int *archs, int max, int *n);
// dt_nvrtcCompile compiles src with opts. On success it returns a malloc'ed
// image (cubin, or NUL-terminated PTX when ptx != 0) in *out; *log gets the
// malloc'ed compiler log in any case (may be NULL). Free both with free().
nvrtcResult dt_nvrtcCompile(const char *src, const char *name, const char **opts, int nopts,
                            int ptx, char **out, size_t *outlen, char **log);

#endif
