package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/difftrain/difftrain/compute"
	"github.com/difftrain/difftrain/compute/cpu"
)

func newCPU(t testing.TB) compute.Backend {
	t.Helper()
	b, err := cpu.New(cpu.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// tinyConfig has every feature on; a soft-cap of 3 against scores of ~√Dh keeps tanh in play.
func tinyConfig() Config {
	c := Default(16, 2, 16, 2, 8)
	c.SoftCap = 3
	c.ZeroHeadInit = false
	c.HeadScale = 16 // head multiplier 1: keeps logits O(1), so float32 noise stays small
	return c
}

// randomParams perturbs every tensor (norm gains, sinks and biases too), so no
// gradient path is hidden by a zero.
func randomParams(c Config, seed uint64) []float32 {
	p := InitHost(c, seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := range p {
		p[i] += float32(rng.NormFloat64() * 0.1)
	}
	return p
}

func inputs(c Config, n int, seed uint64) (tok, noise []int32) {
	rng := rand.New(rand.NewPCG(seed, 9))
	T := n * c.SeqLen
	tok, noise = make([]int32, T), make([]int32, T)
	for i := range tok {
		tok[i] = int32(rng.IntN(c.Vocab))
		noise[i] = 1
	}
	// sequence 0 has a 3-token prompt.
	for i := 0; i < 3; i++ {
		noise[i] = 0
	}
	return tok, noise
}

// objective is Σ r·logits for a fixed random r, in float64.
func objective(t *testing.T, m *Model, tok, noise []int32, n int, causal bool, r []float32) float64 {
	t.Helper()
	if err := m.Forward(tok, noise, n, causal); err != nil {
		t.Fatal(err)
	}
	l := make([]float32, m.Logits().Len())
	m.B.DownloadF32(l, m.Logits())
	s := 0.0
	for i := range l {
		s += float64(l[i]) * float64(r[i])
	}
	return s
}

func TestBackwardMatchesFiniteDifferences(t *testing.T) {
	for _, causal := range []bool{false, true} {
		c := tinyConfig()
		b := newCPU(t)
		const n = 2
		m, err := New(b, c, n)
		if err != nil {
			t.Fatal(err)
		}
		p := randomParams(c, 1)
		if err := m.SetParams(p); err != nil {
			t.Fatal(err)
		}
		tok, noise := inputs(c, n, 2)
		rng := rand.New(rand.NewPCG(3, 3))
		r := make([]float32, n*c.SeqLen*c.Vocab)
		for i := range r {
			r[i] = float32(rng.NormFloat64())
		}
		objective(t, m, tok, noise, n, causal, r)
		b.UploadF32(m.Logits(), r)
		m.ZeroGrad()
		var spans [][2]int
		if err := m.Backward(func(lo, hi int) { spans = append(spans, [2]int{lo, hi}) }); err != nil {
			t.Fatal(err)
		}
		g := make([]float32, m.Grads.Len())
		b.DownloadF32(g, m.Grads)
		// ready() covers the buffer exactly, from the end to the start.
		end := len(g)
		for _, s := range spans {
			if s[1] != end {
				t.Fatalf("ready spans %v do not tile the buffer backwards", spans)
			}
			end = s[0]
		}
		if end != 0 {
			t.Fatalf("ready spans %v stop at %d", spans, end)
		}
		for _, tn := range m.Tensors {
			// Two directions on this tensor: the backward gradient itself
			// (largest signal) and a random one. The random one is compared
			// relative to ‖g‖·‖dir‖, the largest derivative it could have.
			var gn float64
			for i := tn.Offset; i < tn.Offset+tn.Size; i++ {
				gn += float64(g[i]) * float64(g[i])
			}
			gn = math.Sqrt(gn)
			if gn == 0 {
				t.Errorf("%s: zero gradient; every feature is on, so every tensor should get one", tn.Name)
				continue
			}
			rms := 0.0
			for i := tn.Offset; i < tn.Offset+tn.Size; i++ {
				rms += float64(p[i]) * float64(p[i])
			}
			rms = math.Sqrt(rms / float64(tn.Size))
			for _, along := range []bool{true, false} {
				dir := make([]float32, len(p))
				var dot, dn float64
				for i := tn.Offset; i < tn.Offset+tn.Size; i++ {
					if along {
						dir[i] = float32(float64(g[i]) / gn * rms * math.Sqrt(float64(tn.Size)))
					} else {
						dir[i] = float32(rng.NormFloat64() * rms)
					}
					dot += float64(dir[i]) * float64(g[i])
					dn += float64(dir[i]) * float64(dir[i])
				}
				// Central differences at eps and 2·eps, Richardson-extrapolated
				// (error O(eps⁴)), so eps can be large against float32 noise.
				central := func(eps float32) float64 {
					plus, minus := make([]float32, len(p)), make([]float32, len(p))
					for i := range p {
						plus[i] = p[i] + eps*dir[i]
						minus[i] = p[i] - eps*dir[i]
					}
					m.SetParams(plus)
					fp := objective(t, m, tok, noise, n, causal, r)
					m.SetParams(minus)
					fm := objective(t, m, tok, noise, n, causal, r)
					return (fp - fm) / (2 * float64(eps))
				}
				// The best step balances truncation against float32
				// rounding; a wrong gradient matches at no step.
				rel, fd := math.Inf(1), 0.0
				for _, eps := range []float32{3e-3, 7e-3, 1.5e-2} {
					d := (4*central(eps) - central(2*eps)) / 3
					scale := math.Abs(d)
					if !along {
						scale = gn * math.Sqrt(dn)
					}
					if e := math.Abs(d-dot) / scale; e < rel {
						rel, fd = e, d
					}
				}
				if rel > 1e-3 {
					t.Errorf("causal=%v %s (along gradient %v): directional derivative %.6g, backward gives %.6g (rel %.2g)",
						causal, tn.Name, along, fd, dot, rel)
				}
			}
		}
		m.SetParams(p)
	}
}

func TestInitialLogitsAreZero(t *testing.T) {
	c := Default(260, 2, 64, 2, 16)
	b := newCPU(t)
	m, err := New(b, c, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Init(42); err != nil {
		t.Fatal(err)
	}
	tok, noise := inputs(c, 2, 1)
	if err := m.Forward(tok, noise, 2, false); err != nil {
		t.Fatal(err)
	}
	l := make([]float32, m.Logits().Len())
	b.DownloadF32(l, m.Logits())
	for i, v := range l {
		if v != 0 {
			t.Fatalf("logit %d = %v at initialisation, want exactly 0 (zero-initialised head)", i, v)
		}
	}
}

func TestInitStatistics(t *testing.T) {
	c := Default(4096, 8, 512, 8, 16)
	p := InitHost(c, 1)
	for _, tn := range Layout(c) {
		w := p[tn.Offset : tn.Offset+tn.Size]
		var s2 float64
		for _, v := range w {
			s2 += float64(v) * float64(v)
		}
		std := math.Sqrt(s2 / float64(len(w)))
		var want float64
		switch {
		case tn.Name == "model.embed_tokens.weight":
			want = 0.02
		case tn.Name == "lm_head.kernel", len(tn.Shape) == 1, isSink(tn.Name):
			want = 0
		default:
			want = 0.4 / math.Sqrt(512) // 0.0176777, spec §5.3 example
		}
		if math.Abs(std-want) > 0.02*want+1e-12 {
			t.Errorf("%s: init std %.6g, want %.6g", tn.Name, std, want)
		}
	}
	if a, b := InitHost(c, 1), InitHost(c, 1); !equal(a, b) {
		t.Error("initialisation is not a pure function of the seed")
	}
}

func equal(a, b []float32) bool {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return len(a) == len(b)
}
