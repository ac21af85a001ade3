package cpu

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/compute"
	"github.com/difftrain/difftrain/compute/computetest"
)

func newFor(blas string, threads int) func(t *testing.T) compute.Backend {
	return newWith(Options{Threads: threads, BLAS: blas})
}

func newWith(o Options) func(t *testing.T) compute.Backend {
	return func(t *testing.T) compute.Backend {
		b, err := New(o)
		if err != nil {
			t.Fatalf("New(%+v): %v", o, err)
		}
		return b
	}
}

// haveOpenBLAS skips the test when libopenblas cannot be loaded.
func haveOpenBLAS(t *testing.T) {
	if _, err := loadOpenBLAS(); err != nil {
		t.Skipf("OpenBLAS not available: %v", err)
	}
}

func TestConformance(t *testing.T) {
	for _, o := range []Options{
		{BLAS: "openblas", Threads: 2},
		{BLAS: "openblas", Threads: 1},
		{BLAS: "openblas", Threads: 3},
		{BLAS: "openblas", Threads: 2, OpenBLASThreads: true},
		{BLAS: "gonum", Threads: 2},
		{BLAS: "gonum", Threads: 3},
	} {
		name := fmt.Sprintf("%s/t%d", o.BLAS, o.Threads)
		if o.OpenBLASThreads {
			name += "/openblas-threads"
		}
		t.Run(name, func(t *testing.T) {
			if o.BLAS == "openblas" {
				haveOpenBLAS(t)
			}
			computetest.Run(t, newWith(o))
		})
	}
}

func TestParityOpenBLASGonum(t *testing.T) {
	haveOpenBLAS(t)
	ref, got := newFor("gonum", 1)(t), newFor("openblas", 2)(t)
	defer ref.Close()
	defer got.Close()
	computetest.Parity(t, ref, got, 1e-4)
}

func TestFallbackToGonum(t *testing.T) {
	fail := func() (*openblas, error) { return nil, errors.New("dlopen libopenblas.so.0: not found") }
	bl, err := pickBLAS("auto", 2, fail)
	if err != nil || bl.kind() != "gonum" {
		t.Fatalf("auto without OpenBLAS: %v, %v; want gonum", bl, err)
	}
	if _, err := pickBLAS("openblas", 2, fail); err == nil || !strings.Contains(err.Error(), "apt-get install libopenblas0") {
		t.Fatalf("openblas without OpenBLAS: error %v, want the install hint", err)
	}
	if _, err := New(Options{BLAS: "mkl"}); err == nil {
		t.Fatal("BLAS mkl: no error")
	}
	if _, err := New(Options{Threads: -1}); err == nil {
		t.Fatal("Threads -1: no error")
	}
}

func TestNameAndHostSlices(t *testing.T) {
	haveOpenBLAS(t)
	b, err := New(Options{Threads: 2, BLAS: "openblas"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if n := b.Name(); !strings.Contains(n, "OpenBLAS") || !strings.Contains(n, "2 threads") {
		t.Errorf("Name() = %q", n)
	}
	x := b.Alloc(compute.F32, 4)
	b.F32(b.View(x, 1, 2))[0] = 7
	got := make([]float32, 4)
	b.DownloadF32(got, x)
	if got[1] != 7 {
		t.Errorf("write through F32(view) not seen: %v", got)
	}
	if s := b.I32(b.Alloc(compute.I32, 3)); len(s) != 3 {
		t.Errorf("I32 len %d", len(s))
	}
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	b.F32(b.Alloc(compute.I32, 1))
	if b.Err() == nil {
		t.Error("F32 of an I32 buffer: no error")
	}
}

func TestNilAndForeignBuffers(t *testing.T) {
	for name, bad := range map[string]func(b, o *Backend){
		"nil":        func(b, o *Backend) { b.Scale(nil, 1) },
		"typed nil":  func(b, o *Backend) { var p *buf; b.Scale(p, 1) },
		"foreign":    func(b, o *Backend) { b.Scale(o.Alloc(compute.F32, 1), 1) },
		"freed":      func(b, o *Backend) { x := b.Alloc(compute.F32, 1); b.Free(x); b.Scale(x, 1) },
		"free view":  func(b, o *Backend) { b.Free(b.View(b.Alloc(compute.F32, 2), 0, 1)) },
		"free twice": func(b, o *Backend) { x := b.Alloc(compute.F32, 1); b.Free(x); b.Free(x) },
	} {
		b, _ := New(Options{Threads: 2, BLAS: "gonum"})
		o, _ := New(Options{Threads: 1, BLAS: "gonum"})
		bad(b, o)
		if b.Err() == nil {
			t.Errorf("%s buffer: no error", name)
		}
		b.Close()
		o.Close()
	}
}
