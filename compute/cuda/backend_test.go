package cuda

import (
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/compute"
	"github.com/difftrain/difftrain/compute/computetest"
	"github.com/difftrain/difftrain/compute/cpu"
)

// newGPU returns a CUDA backend or skips the test with the reason.
func newGPU(t testing.TB, p Precision) *Backend {
	t.Helper()
	be, err := New(Options{Precision: p})
	if err != nil {
		if os.Getenv(RequireGPUEnv) != "" {
			t.Fatalf("%s is set but the CUDA backend does not open: %v", RequireGPUEnv, err)
		}
		t.Skipf("no CUDA device: %v", err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

func newCPU(t testing.TB) *cpu.Backend {
	t.Helper()
	be, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

// TestNewWithoutGPU checks that a machine without a driver or device gets a
// clear error naming what is missing.
func TestNewWithoutGPU(t *testing.T) {
	be, err := New(Options{})
	if err == nil {
		be.Close()
		t.Skip("a CUDA device is present")
	}
	t.Logf("New: %v", err)
	var le *LoadError
	switch {
	case errors.As(err, &le):
		if le.Lib == "CUDA driver" && !strings.Contains(err.Error(), "libcuda.so.1") {
			t.Errorf("driver load error %q does not name libcuda.so.1", err)
		}
	case errors.Is(err, ErrNoDevice), errors.Is(err, ErrDriverTooOld):
	default:
		t.Fatalf("New error %q (%T) is none of the documented kinds", err, err)
	}
}

func TestParsePrecision(t *testing.T) {
	for in, want := range map[string]Precision{"fp32": FP32, "TF32": TF32, "bf16": BF16, "": FP32} {
		if got, err := ParsePrecision(in); err != nil || got != want {
			t.Errorf("ParsePrecision(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParsePrecision("fp16"); err == nil {
		t.Error("fp16 accepted")
	}
}

func TestPeakTFLOPS(t *testing.T) {
	if got := peakTFLOPS("NVIDIA H200", BF16); got != 989.4 {
		t.Errorf("H200 bf16 = %v", got)
	}
	if got := peakTFLOPS("NVIDIA H100 PCIe", TF32); got != 378 {
		t.Errorf("H100 PCIe tf32 = %v", got)
	}
	if got := peakTFLOPS("NVIDIA A100-SXM4-80GB", FP32); got != 19.5 {
		t.Errorf("A100 fp32 = %v", got)
	}
	if got := peakTFLOPS("Some GPU", FP32); got != 0 {
		t.Errorf("unknown GPU = %v", got)
	}
}

func TestGroupByID(t *testing.T) {
	ids := []int32{5, 2, 5, 0, 2, 5}
	order, seg, segid, ok := groupByID(ids, 6)
	if !ok {
		t.Fatal("valid ids rejected")
	}
	wantOrder := []int32{3, 1, 4, 0, 2, 5}
	wantSeg := []int32{0, 1, 3, 6}
	wantID := []int32{0, 2, 5}
	if !equal(order, wantOrder) || !equal(seg, wantSeg) || !equal(segid, wantID) {
		t.Errorf("groupByID = %v %v %v, want %v %v %v", order, seg, segid, wantOrder, wantSeg, wantID)
	}
	if _, _, _, ok := groupByID([]int32{1, 6}, 6); ok {
		t.Error("id 6 of vocab 6 accepted")
	}
	if _, _, _, ok := groupByID([]int32{-1}, 6); ok {
		t.Error("id -1 accepted")
	}
}

func equal(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBF16Host(t *testing.T) {
	tests := []struct {
		in   float32
		want uint16
	}{
		{1, 0x3f80}, {-2, 0xc000}, {0, 0}, {float32(math.Inf(1)), 0x7f80},
		{math.Float32frombits(0x3f808000), 0x3f80}, // tie, even stays
		{math.Float32frombits(0x3f818000), 0x3f82}, // tie, odd rounds up
		{math.Float32frombits(0x3f808001), 0x3f81}, // above the tie
		{math.Float32frombits(0x7f7fffff), 0x7f80}, // overflows to +Inf
	}
	for _, tc := range tests {
		if got := ToBF16(tc.in); got != tc.want {
			t.Errorf("ToBF16(%#x) = %#x, want %#x", math.Float32bits(tc.in), got, tc.want)
		}
	}
	if f := FromBF16(ToBF16(float32(math.NaN()))); f == f {
		t.Error("NaN did not stay NaN")
	}
}

func TestQuantizeQ8Host(t *testing.T) {
	x := []float32{1, -0.5, 0.25, 127, 0, 0, 0, 3}
	q, s := QuantizeQ8(x, 4)
	if len(s) != 2 || s[0] != 1 || s[1] != float32(3)/127 {
		t.Fatalf("scales %v", s)
	}
	want := []int8{1, 0, 0, 127, 0, 0, 0, 127} // -0.5 and 0.25 round to even 0
	for i := range want {
		if q[i] != want[i] {
			t.Fatalf("q = %v, want %v", q, want)
		}
	}
	q, s = QuantizeQ8([]float32{1, 2, 3}, 2)
	if len(q) != 3 || len(s) != 2 || q[2] != 127 {
		t.Errorf("short last block: q %v s %v", q, s)
	}
}

// ---- GPU tests: skipped without a device ----

func TestConformance(t *testing.T) {
	newGPU(t, FP32) // skip early without a GPU
	computetest.Run(t, func(t *testing.T) compute.Backend {
		be, err := New(Options{})
		if err != nil {
			t.Fatal(err)
		}
		return be
	})
}

// TestParity compares every operation, forward and backward, with the CPU
// backend on the conformance suite's random inputs.
func TestParity(t *testing.T) {
	for _, tc := range []struct {
		p   Precision
		tol float64
	}{{FP32, 1e-5}, {TF32, 5e-2}, {BF16, 1e-1}} {
		// computetest judges every element against tol·(|want| +
		// 0.05·max|want|), so entries near zero of GEMMs with rounded
		// operands need more than 1e-2 (bf16 attention with Dh = 4 is off by
		// up to 0.5% of the largest entry); the normwise 1e-2 bound of bf16
		// and tf32 is checked by the TestParity* tests below.
		t.Run(tc.p.String(), func(t *testing.T) {
			computetest.Parity(t, newCPU(t), newGPU(t, tc.p), tc.tol)
		})
	}
}

// pair runs the same calls on the CPU and the GPU backend.
type pair struct {
	t   *testing.T
	cpu compute.Backend
	gpu *Backend
	rng *rand.Rand
}

type bufs struct{ c, g compute.Buffer }

func (p *pair) rnd(n int, sd float64) bufs {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(p.rng.NormFloat64() * sd)
	}
	return p.up(v)
}

func (p *pair) up(v []float32) bufs {
	b := bufs{p.cpu.Alloc(compute.F32, len(v)), p.gpu.Alloc(compute.F32, len(v))}
	p.cpu.UploadF32(b.c, v)
	p.gpu.UploadF32(b.g, v)
	return b
}

func (p *pair) upI(v []int32) bufs {
	b := bufs{p.cpu.Alloc(compute.I32, len(v)), p.gpu.Alloc(compute.I32, len(v))}
	p.cpu.UploadI32(b.c, v)
	p.gpu.UploadI32(b.g, v)
	return b
}

// check compares a buffer: max|gpu−cpu| <= tol·max|cpu|.
func (p *pair) check(name string, b bufs, tol float64) {
	p.t.Helper()
	c := make([]float32, b.c.Len())
	g := make([]float32, b.g.Len())
	p.cpu.DownloadF32(c, b.c)
	p.gpu.DownloadF32(g, b.g)
	if err := p.gpu.Err(); err != nil {
		p.t.Fatalf("%s: gpu: %v", name, err)
	}
	if err := p.cpu.Err(); err != nil {
		p.t.Fatalf("%s: cpu: %v", name, err)
	}
	var scale, worst float64
	wi := 0
	for i := range c {
		scale = max(scale, math.Abs(float64(c[i])))
	}
	for i := range c {
		d := math.Abs(float64(g[i]) - float64(c[i]))
		if d > worst || math.IsNaN(d) {
			worst, wi = d, i
		}
	}
	rel := worst / max(scale, 1e-30)
	if !(rel <= tol) {
		p.t.Errorf("%s: max error %.3g of scale %.3g (relative %.3g > %g) at %d: gpu %v cpu %v",
			name, worst, scale, rel, tol, wi, g[wi], c[wi])
	} else {
		p.t.Logf("%s: relative error %.3g", name, rel)
	}
}

func newPair(t *testing.T, prec Precision) *pair {
	g := newGPU(t, prec)
	return &pair{t: t, cpu: newCPU(t), gpu: g, rng: rand.New(rand.NewPCG(1, 2))}
}

func both(p *pair, f func(be compute.Backend, sel func(bufs) compute.Buffer)) {
	f(p.cpu, func(b bufs) compute.Buffer { return b.c })
	f(p.gpu, func(b bufs) compute.Buffer { return b.g })
}

// TestParityTrainingShapes runs the operations at the shapes of a real model
// (d 768, 12 heads, sequence 1024 for attention, vocabulary 50304 for the
// loss), where block sizes, grid strides and cuBLAS algorithms differ from the
// conformance suite's small cases.
func TestParityTrainingShapes(t *testing.T) {
	for _, tc := range []struct {
		p   Precision
		tol float64
	}{{FP32, 1e-5}, {TF32, 1e-2}, {BF16, 1e-2}} {
		t.Run(tc.p.String(), func(t *testing.T) {
			p := newPair(t, tc.p)
			rows, d := 256, 768
			if testing.Short() {
				rows = 64
			}
			// Linear layer forward and both backward GEMMs.
			x, w, y := p.rnd(rows*d, 1), p.rnd(d*3*d, 0.02), p.rnd(rows*3*d, 1)
			dy, dx, dw := p.rnd(rows*3*d, 1), p.rnd(rows*d, 1), p.rnd(d*3*d, 1)
			both(p, func(be compute.Backend, s func(bufs) compute.Buffer) {
				be.Gemm(compute.Gemm{M: rows, N: 3 * d, K: d, Alpha: 1, A: s(x), B: s(w), C: s(y)})
				be.Gemm(compute.Gemm{M: rows, N: d, K: 3 * d, TransB: true, Alpha: 1, A: s(dy), B: s(w), C: s(dx)})
				be.Gemm(compute.Gemm{M: d, N: 3 * d, K: rows, TransA: true, Alpha: 1, Beta: 1, A: s(x), B: s(dy), C: s(dw)})
			})
			p.check("gemm y", y, tc.tol)
			p.check("gemm dx", dx, tc.tol)
			p.check("gemm dw", dw, tc.tol)

			tol := 1e-5 // the rest is fp32 in every precision, except attention's GEMMs
			nw, ny, rs := p.rnd(d, 0.1), p.rnd(rows*d, 1), p.rnd(rows, 1)
			ndy, ndx, ndw := p.rnd(rows*d, 1), p.rnd(rows*d, 1), p.rnd(d, 1)
			both(p, func(be compute.Backend, s func(bufs) compute.Buffer) {
				be.RMSNorm(s(x), s(nw), s(ny), s(rs), rows, d, 1e-6)
				be.RMSNormBackward(s(x), s(nw), s(rs), s(ndy), s(ndx), s(ndw), rows, d)
			})
			p.check("rmsnorm y", ny, tol)
			p.check("rmsnorm rstd", rs, tol)
			p.check("rmsnorm dx", ndx, tol)
			p.check("rmsnorm dw", ndw, tol)

			rope := compute.RopeShape{B: 2, N: rows / 2, H: 12, Dh: 64, Theta: 10000}
			r := p.rnd(rows*d, 1)
			both(p, func(be compute.Backend, s func(bufs) compute.Buffer) { be.Rope(s(r), rope) })
			p.check("rope", r, tol)
			both(p, func(be compute.Backend, s func(bufs) compute.Buffer) { be.RopeBackward(s(r), rope) })
			p.check("rope inverse", r, tol)

			// Embedding backward with many repeated ids.
			vocab := 1000
			ids := make([]int32, rows)
			for i := range ids {
				ids[i] = int32(p.rng.IntN(37) * 7 % vocab)
			}
			id, table, emb, dtab := p.upI(ids), p.rnd(vocab*d, 1), p.rnd(rows*d, 1), p.rnd(vocab*d, 1)
			both(p, func(be compute.Backend, s func(bufs) compute.Buffer) {
				be.Embedding(s(table), s(id), s(emb), rows, d)
				be.EmbeddingBackward(s(dtab), s(id), s(ndy), rows, d)
			})
			p.check("embedding", emb, tol)
			p.check("embedding backward", dtab, tol)

			// Bias, squared ReLU.
			bias, dbias, h := p.rnd(3*d, 1), p.rnd(3*d, 1), p.rnd(rows*3*d, 1)
			both(p, func(be compute.Backend, s func(bufs) compute.Buffer) {
				be.AddBias(s(y), s(bias), rows, 3*d)
				be.BiasBackward(s(dy), s(dbias), rows, 3*d)
				be.ReluSq(s(y), s(h))
				be.ReluSqBackward(s(y), s(dy), s(dy))
			})
			p.check("add bias", y, tc.tol)
			p.check("bias backward", dbias, tol)
			p.check("relu²", h, tc.tol)
			p.check("relu² backward", dy, tc.tol)
			if got, want := p.gpu.SumSquares(y.g), p.cpu.SumSquares(y.c); math.Abs(got-want) > tc.tol*want {
				t.Errorf("SumSquares: gpu %v cpu %v", got, want)
			}
		})
	}
}

func TestParityAttentionSeq1024(t *testing.T) {
	for _, tc := range []struct {
		p   Precision
		tol float64
	}{{FP32, 1e-5}, {TF32, 1e-2}, {BF16, 1e-2}} {
		t.Run(tc.p.String(), func(t *testing.T) {
			p := newPair(t, tc.p)
			a := compute.Attn{B: 2, N: 1024, H: 4, Dh: 64, SoftCap: 30}
			if testing.Short() {
				a.N, a.H = 96, 2
			}
			n, hd := a.B*a.N*a.H*a.Dh, a.H*a.Dh
			q, k, v := p.rnd(n, 1), p.rnd(n, 1), p.rnd(n, 1)
			sk, sv, dsk, dsv := p.rnd(hd, 1), p.rnd(hd, 1), p.rnd(hd, 1), p.rnd(hd, 1)
			noise := make([]int32, a.B*a.N)
			for i := range noise {
				noise[i] = 1
				if i%a.N < a.N/3 { // a prompt in every sequence
					noise[i] = 0
				}
			}
			nz := p.upI(noise)
			out, saved := p.rnd(n, 1), p.rnd(compute.AttnSavedLen(a.B, a.N, a.H), 1)
			dout, dq, dk, dv := p.rnd(n, 1), p.rnd(n, 1), p.rnd(n, 1), p.rnd(n, 1)
			for _, causal := range []bool{false, true} {
				both(p, func(be compute.Backend, s func(bufs) compute.Buffer) {
					x := a
					x.CausalPrompt = causal
					x.Q, x.K, x.V, x.SinkK, x.SinkV, x.Noise = s(q), s(k), s(v), s(sk), s(sv), s(nz)
					x.Out, x.Saved, x.DOut, x.DQ, x.DK, x.DV = s(out), s(saved), s(dout), s(dq), s(dk), s(dv)
					x.DSinkK, x.DSinkV = s(dsk), s(dsv)
					be.Attention(x)
					be.AttentionBackward(x)
				})
				for _, c := range []struct {
					name string
					b    bufs
				}{{"out", out}, {"dq", dq}, {"dk", dk}, {"dv", dv}, {"dsinkK", dsk}, {"dsinkV", dsv}} {
					p.check(c.name, c.b, tc.tol)
				}
			}
		})
	}
}

func TestParityLossVocab50304(t *testing.T) {
	p := newPair(t, FP32)
	T, V, m := 64, 50304, 3
	logits := make([]float32, T*V)
	for i := range logits {
		logits[i] = float32(p.rng.NormFloat64() * 3)
	}
	labels, noisy := make([]int32, T), make([]int32, T)
	params := make([]float32, T*compute.LossParamStride)
	for t := range T {
		labels[t] = int32(p.rng.IntN(V-4) + 4)
		switch t % 3 {
		case 0:
			noisy[t] = int32(m)
		case 1:
			noisy[t] = labels[t]
		default:
			noisy[t] = int32(p.rng.IntN(V))
		}
		row := params[t*compute.LossParamStride:]
		alpha := p.rng.Float64()
		row[compute.LPAlpha], row[compute.LPNoiseRate] = float32(alpha), float32(1-alpha)
		row[compute.LPUniform] = float32(p.rng.Float64())
		row[compute.LPWTrain] = float32(p.rng.Float64() * 2)
		row[compute.LPWElbo] = float32(p.rng.Float64() * 10)
		row[compute.LPGradScale] = float32(t % 2)
	}
	for _, grad := range []bool{false, true} {
		lg, lb, nz, pr := p.up(logits), p.upI(labels), p.upI(noisy), p.up(params)
		out := p.rnd(T*compute.LossOutStride, 1)
		both(p, func(be compute.Backend, s func(bufs) compute.Buffer) {
			be.GIDDLoss(compute.Loss{T: T, V: V, MaskID: m, BetaIS: 1, Logits: s(lg), Labels: s(lb), Noisy: s(nz),
				Params: s(pr), Out: s(out), Grad: grad})
		})
		p.check("loss out", out, 1e-5)
		if grad {
			p.check("loss grad", lg, 1e-5)
		}
	}
}

// TestDeterministic runs backward operations twice: the results must be
// bitwise equal (no atomics, fixed reduction orders).
func TestDeterministic(t *testing.T) {
	g := newGPU(t, FP32)
	rng := rand.New(rand.NewPCG(3, 4))
	up := func(n int) compute.Buffer {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		b := g.Alloc(compute.F32, n)
		g.UploadF32(b, v)
		return b
	}
	a := compute.Attn{B: 2, N: 256, H: 2, Dh: 128, SoftCap: 30}
	if testing.Short() {
		a.N = 64
	}
	rows, d, vocab := a.B*a.N, a.H*a.Dh, 50
	ids := make([]int32, rows)
	for i := range ids {
		ids[i] = int32(rng.IntN(vocab))
	}
	idb := g.Alloc(compute.I32, rows)
	g.UploadI32(idb, ids)
	dout, x, w, rs, dy := up(rows*d), up(rows*d), up(d), up(rows), up(rows*d)
	a.Q, a.K, a.V, a.SinkK, a.SinkV = up(rows*d), up(rows*d), up(rows*d), up(d), up(d)
	a.Out, a.DOut, a.DQ, a.DK, a.DV = up(rows*d), dout, up(rows*d), up(rows*d), up(rows*d)
	a.Saved = g.Alloc(compute.F32, compute.AttnSavedLen(a.B, a.N, a.H))
	run := func() [][]float32 {
		dtab, dw, dx := g.Alloc(compute.F32, vocab*d), g.Alloc(compute.F32, d), g.Alloc(compute.F32, rows*d)
		a.DSinkK, a.DSinkV = g.Alloc(compute.F32, d), g.Alloc(compute.F32, d)
		g.EmbeddingBackward(dtab, idb, dout, rows, d)
		g.RMSNorm(x, w, dx, rs, rows, d, 1e-6)
		g.RMSNormBackward(x, w, rs, dy, dx, dw, rows, d)
		g.Attention(a)
		g.AttentionBackward(a)
		var res [][]float32
		for _, b := range []compute.Buffer{dtab, dw, dx, a.DQ, a.DK, a.DV, a.DSinkK, a.DSinkV} {
			v := make([]float32, b.Len())
			g.DownloadF32(v, b)
			res = append(res, v)
		}
		return res
	}
	r1, r2 := run(), run()
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	for i := range r1 {
		for j := range r1[i] {
			if math.Float32bits(r1[i][j]) != math.Float32bits(r2[i][j]) {
				t.Fatalf("output %d differs at %d between runs: %v vs %v", i, j, r1[i][j], r2[i][j])
			}
		}
	}
}

func TestDownloads(t *testing.T) {
	g := newGPU(t, FP32)
	rng := rand.New(rand.NewPCG(5, 6))
	n := 3<<20 + 17
	if testing.Short() {
		n = 1<<16 + 17
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	v[5] = float32(math.NaN())
	x := g.Alloc(compute.F32, n)
	g.UploadF32(x, v)

	// Pinned and pageable asynchronous downloads, overlapping queued work.
	pinned, err := g.HostAlloc(n)
	if err != nil {
		t.Fatal(err)
	}
	plain := make([]float32, n)
	p1 := g.StartDownload(pinned, x)
	p2 := g.StartDownload(plain, x)
	g.Scale(g.Alloc(compute.F32, 1<<20), 2) // more work on the compute stream
	done := make(chan error)
	go func() { done <- p1.Wait() }() // Wait from another goroutine
	if err := p2.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range v {
		if math.Float32bits(pinned[i]) != math.Float32bits(v[i]) || math.Float32bits(plain[i]) != math.Float32bits(v[i]) {
			t.Fatalf("element %d: pinned %v plain %v want %v", i, pinned[i], plain[i], v[i])
		}
	}
	if err := g.HostFree(pinned); err != nil {
		t.Fatal(err)
	}

	h := make([]uint16, n)
	g.DownloadBF16(h, x)
	for i := range v {
		if want := ToBF16(v[i]); h[i] != want {
			t.Fatalf("bf16 element %d: %#x, want %#x", i, h[i], want)
		}
	}
	for _, block := range []int{64, 1000, 4096} {
		q := make([]int8, n)
		s := make([]float32, (n+block-1)/block)
		g.DownloadQ8(q, s, x, block)
		wq, ws := QuantizeQ8(v, block)
		for i := range s {
			if s[i] != ws[i] {
				t.Fatalf("block %d: scale %d = %v, want %v", block, i, s[i], ws[i])
			}
		}
		for i := range q {
			if q[i] != wq[i] {
				t.Fatalf("block %d: q[%d] = %d, want %d", block, i, q[i], wq[i])
			}
		}
	}
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestParityColumnSums covers column sums over several row chunks and a
// partial column block (BiasBackward, RMSNormBackward's dw).
func TestParityColumnSums(t *testing.T) {
	p := newPair(t, FP32)
	rows, cols := 2*colSumChunk+77, 40
	dx, dbias := p.rnd(rows*cols, 1), p.rnd(cols, 1)
	x, w, rs, dy, ndx, dw := p.rnd(rows*cols, 1), p.rnd(cols, 0.1), p.rnd(rows, 1), p.rnd(rows*cols, 1),
		p.rnd(rows*cols, 1), p.rnd(cols, 1)
	both(p, func(be compute.Backend, s func(bufs) compute.Buffer) {
		be.BiasBackward(s(dx), s(dbias), rows, cols)
		be.RMSNorm(s(x), s(w), s(ndx), s(rs), rows, cols, 1e-6)
		be.RMSNormBackward(s(x), s(w), s(rs), s(dy), s(dy), s(dw), rows, cols) // dx aliases dy
	})
	p.check("bias backward", dbias, 1e-5)
	p.check("rmsnorm dw", dw, 1e-5)
	p.check("rmsnorm dx in place", dy, 1e-5)
}
