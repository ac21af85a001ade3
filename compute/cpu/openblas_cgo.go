//go:build cgo

package cpu

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

// Our own minimal declarations of the OpenBLAS entry points we use, so no
// OpenBLAS headers are needed at build time (the go-nvml approach).
typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k,
	float alpha, const float *a, int lda, const float *b, int ldb,
	float beta, float *c, int ldc);
typedef void (*set_threads_fn)(int);
typedef int (*get_threads_fn)(void);
typedef char *(*str_fn)(void);

static void *ob_handle;
static sgemm_fn ob_sgemm_p;
static set_threads_fn ob_set_threads_p;
static get_threads_fn ob_get_threads_p;
static str_fn ob_corename_p;
static str_fn ob_config_p;

// ob_load returns NULL on success, else a static error string.
static const char *ob_load(const char *name) {
	void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) return dlerror();
	ob_sgemm_p = (sgemm_fn)dlsym(h, "cblas_sgemm");
	ob_set_threads_p = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
	ob_get_threads_p = (get_threads_fn)dlsym(h, "openblas_get_num_threads");
	ob_corename_p = (str_fn)dlsym(h, "openblas_get_corename");
	ob_config_p = (str_fn)dlsym(h, "openblas_get_config");
	if (!ob_sgemm_p || !ob_set_threads_p || !ob_get_threads_p || !ob_corename_p || !ob_config_p) {
		dlclose(h);
		return "library lacks cblas_sgemm or the openblas_* thread/config functions";
	}
	ob_handle = h;
	return NULL;
}

// CBLAS enums: CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112.
static void ob_sgemm(int ta, int tb, int m, int n, int k, float alpha,
	const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
	ob_sgemm_p(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
static void ob_set_threads(int n) { ob_set_threads_p(n); }
static int ob_get_threads(void) { return ob_get_threads_p(); }
static const char *ob_corename(void) { return ob_corename_p(); }
static const char *ob_config(void) { return ob_config_p(); }
*/
import "C"

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

var (
	obOnce sync.Once
	obErr  error
	obLib  *openblas
)

// loadOpenBLAS dlopens libopenblas once per process; it is never unloaded
// (its threads outlive any one Backend).
//
// OpenBLAS starts a thread per core when loaded, and idle threads spin in
// sched_yield for a while after each call. Unless OPENBLAS_NUM_THREADS is
// set, the pool starts at 1 and grows to the Threads a Backend asks for, so
// no thread exists that no Backend uses.
func loadOpenBLAS() (*openblas, error) {
	obOnce.Do(func() {
		if v, ok := os.LookupEnv("OPENBLAS_NUM_THREADS"); !ok {
			// Read by OpenBLAS's constructor during dlopen; then removed, so
			// that child processes do not inherit it.
			os.Setenv("OPENBLAS_NUM_THREADS", "1")
			defer os.Unsetenv("OPENBLAS_NUM_THREADS")
		} else {
			slog.Info("OPENBLAS_NUM_THREADS is set: OpenBLAS starts that many threads; Options.Threads still sets how many each GEMM uses",
				"OPENBLAS_NUM_THREADS", v)
		}
		var msgs []string
		for _, name := range []string{"libopenblas.so.0", "libopenblas.so"} {
			cs := C.CString(name)
			e := C.ob_load(cs)
			C.free(unsafe.Pointer(cs))
			if e == nil {
				obLib = &openblas{
					core:   strings.TrimSpace(C.GoString(C.ob_corename())),
					config: strings.TrimSpace(C.GoString(C.ob_config())),
				}
				return
			}
			msgs = append(msgs, C.GoString(e))
		}
		obErr = fmt.Errorf("load OpenBLAS: %s", strings.Join(msgs, "; "))
	})
	return obLib, obErr
}

// openblas calls cblas_sgemm of the dlopened library.
type openblas struct {
	core, config string
	cur          atomic.Int64 // thread count last set
}

func (o *openblas) kind() string { return "openblas" }

func (o *openblas) describe() string {
	ver := o.config
	if f := strings.Fields(o.config); len(f) >= 2 && f[0] == "OpenBLAS" {
		ver = f[0] + " " + f[1]
	}
	return fmt.Sprintf("%s, %s", ver, o.core)
}

// useThreads calls openblas_set_num_threads when the count changes; the
// last count set is cached (OpenBLAS's setting is process-wide).
func (o *openblas) useThreads(n int) {
	if o.cur.Load() != int64(n) {
		C.ob_set_threads(C.int(n))
		o.cur.Store(int64(n))
	}
}
func (o *openblas) getThreads() int { return int(C.ob_get_threads()) }

func (o *openblas) sgemm(ta, tb bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	C.ob_sgemm(cbool(ta), cbool(tb), C.int(m), C.int(n), C.int(k), C.float(alpha),
		(*C.float)(unsafe.Pointer(&a[0])), C.int(lda),
		(*C.float)(unsafe.Pointer(&b[0])), C.int(ldb), C.float(beta),
		(*C.float)(unsafe.Pointer(&c[0])), C.int(ldc))
}

func cbool(v bool) C.int {
	if v {
		return 1
	}
	return 0
}
