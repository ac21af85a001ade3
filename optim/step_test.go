package optim

import (
	"math"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/compute"
)

// hostBuf and fakeBackend implement the few Backend methods Step uses, on
// host memory, following compute.OptStep's formulas in float32. Calling any
// other method panics on the nil embedded interface.
type hostBuf struct {
	f  []float32
	dt compute.DType
}

func (b *hostBuf) Len() int             { return len(b.f) }
func (b *hostBuf) DType() compute.DType { return b.dt }
func zeros(n int) *hostBuf              { return &hostBuf{f: make([]float32, n)} }
func buf(x compute.Buffer) []float32    { return x.(*hostBuf).f }

type fakeBackend struct {
	compute.Backend
	updates []compute.OptStep
	scales  []float32
}

func (f *fakeBackend) SumSquares(x compute.Buffer) float64 {
	var s float64
	for _, v := range buf(x) {
		s += float64(v) * float64(v)
	}
	return s
}

func (f *fakeBackend) Scale(x compute.Buffer, a float32) {
	f.scales = append(f.scales, a)
	for i := range buf(x) {
		buf(x)[i] *= a
	}
}

func (f *fakeBackend) Update(p, g, m, v compute.Buffer, h compute.OptStep) {
	f.updates = append(f.updates, h)
	P, G, M, V := buf(p), buf(g), buf(m), buf(v)
	t := float64(h.Step)
	b1, b2 := float64(h.Beta1), float64(h.Beta2)
	c1, c2 := 1-math.Pow(b1, t), 1-math.Pow(b2, t)
	for i := range P {
		gi := float64(G[i])
		if h.Kind == compute.AdamW {
			M[i] = float32(b1*float64(M[i]) + (1-b1)*gi)
			V[i] = float32(b2*float64(V[i]) + (1-b2)*gi*gi)
			P[i] -= float32(float64(h.LR) * ((float64(M[i])/c1)/(math.Sqrt(float64(V[i])/c2)+float64(h.Eps)) + float64(h.WD)*float64(P[i])))
			continue
		}
		bb1, bb2 := 1-(1-b1)/c1, 1-(1-b2)/c2
		V[i] = float32(bb2*float64(V[i]) + (1-bb2)*gi*gi)
		gh := gi / (math.Sqrt(float64(V[i])) + float64(h.Eps))
		M[i] = float32(bb1*float64(M[i]) + (1-bb1)*gh)
		P[i] -= float32(float64(h.LR) * (float64(M[i]) + float64(h.WD)*float64(P[i])))
	}
}

type refParam struct {
	name  string
	shape []int
	p     []float64
	ref   *Ref
}

// TestStepMatchesReference runs several updates of a small model's worth of
// parameters through Step and the float64 reference, per group.
func TestStepMatchesReference(t *testing.T) {
	for _, kind := range []compute.OptKind{compute.LaProp, compute.AdamW} {
		for _, clip := range []float64{0, 0.5} {
			cfg := Default(0.5, 8, 2, 20)
			cfg.Kind = kind
			cfg.Schedule = WSD{Steps: 20, Warmup: 3, Cooldown: 0.25}
			cfg.WeightDecay, cfg.LNWD, cfg.BiasWD = 0.01, 0.1, 0.2
			cfg.ClipNorm = clip
			o, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			specs := []refParam{
				{name: "embed_tokens.weight", shape: []int{3, 2}},
				{name: "layers.0.attn.q_proj.weight", shape: []int{2, 2}},
				{name: "layers.0.attn_norm.weight", shape: []int{2}},
				{name: "layers.0.mlp.up_proj.bias", shape: []int{2}},
				{name: "layers.0.attn.k_sink", shape: []int{2}},
				{name: "lm_head.weight", shape: []int{2, 3}},
			}
			var params []Param
			for i := range specs {
				n := 1
				for _, d := range specs[i].shape {
					n *= d
				}
				specs[i].p = make([]float64, n)
				specs[i].ref = NewRef(n)
				pb := zeros(n)
				for j := range pb.f {
					pb.f[j] = float32(math.Sin(float64(i*7 + j)))
					specs[i].p[j] = float64(pb.f[j])
				}
				params = append(params, Param{Name: specs[i].name, Shape: specs[i].shape, P: pb, G: zeros(n), M: zeros(n), V: zeros(n)})
			}
			b := &fakeBackend{}
			for k := 0; k < 8; k++ {
				grads := make([][]float64, len(specs))
				var ss float64
				for i, p := range params {
					grads[i] = make([]float64, len(buf(p.G)))
					for j := range buf(p.G) {
						g := float32(math.Cos(float64(k*13+i*5+j)) * float64(1+i))
						buf(p.G)[j] = g
						grads[i][j] = float64(g)
						ss += float64(g) * float64(g)
					}
				}
				st, err := o.Step(b, params, k)
				if err != nil {
					t.Fatal(err)
				}
				scale := 1.0
				if clip > 0 {
					if !near(st.GradNorm, math.Sqrt(ss), 1e-6) {
						t.Errorf("grad norm %g, want %g", st.GradNorm, math.Sqrt(ss))
					}
					if math.Sqrt(ss) > clip {
						scale = clip / math.Sqrt(ss)
						if !st.Clipped {
							t.Error("not clipped")
						}
					}
				} else if !math.IsNaN(st.GradNorm) || len(b.scales) != 0 {
					t.Error("clipping off, yet the norm was computed or gradients scaled")
				}
				for i := range specs {
					g := GroupOf(specs[i].name, len(specs[i].shape))
					for j := range grads[i] {
						grads[i][j] *= scale
					}
					specs[i].ref.Step(kind, specs[i].p, grads[i], cfg.GroupLR(g)*cfg.Schedule.At(k), cfg.GroupWD(g), cfg.Beta1, cfg.Beta2, cfg.Eps())
				}
			}
			for i, p := range params {
				for j, want := range specs[i].p {
					if got := float64(buf(p.P)[j]); math.Abs(got-want) > 1e-5*math.Max(1, math.Abs(want)) {
						t.Errorf("%v clip=%g %s[%d] = %.8g, reference %.8g", kind, clip, specs[i].name, j, got, want)
					}
				}
			}
			if len(b.updates) != 8*len(specs) || b.updates[len(b.updates)-1].Step != 8 {
				t.Errorf("%d updates, last step %d", len(b.updates), b.updates[len(b.updates)-1].Step)
			}
		}
	}
}

func TestStepChecksParams(t *testing.T) {
	o, err := New(Default(0.5, 8, 2, 10))
	if err != nil {
		t.Fatal(err)
	}
	good := func() Param {
		return Param{Name: "w", Shape: []int{2, 2}, P: zeros(4), G: zeros(4), M: zeros(4), V: zeros(4)}
	}
	tests := []struct {
		want string
		mod  func(*Param)
	}{
		{"no gradient", func(p *Param) { p.G = nil }},
		{"second moment buffer has 3", func(p *Param) { p.V = zeros(3) }},
		{"want f32", func(p *Param) { p.M = &hostBuf{f: make([]float32, 4), dt: compute.I32} }},
		{"non-positive dimension", func(p *Param) { p.Shape = []int{0, 4} }},
	}
	for _, tt := range tests {
		p := good()
		tt.mod(&p)
		_, err := o.Step(&fakeBackend{}, []Param{good(), p}, 0)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "parameter w") {
			t.Errorf("%s: got %v", tt.want, err)
		}
	}
	if _, err := o.Step(&fakeBackend{}, []Param{good()}, -1); err == nil {
		t.Error("negative k accepted")
	}
}
