package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/difftrain/difftrain/compute"
)

// Tensor is one named parameter: a view of Size floats at Offset into the flat
// parameter buffer (and, at the same offset, into the gradient buffer).
// Weight matrices are stored [in, out] row-major, so y = x·W.
type Tensor struct {
	Name   string
	Shape  []int
	Offset int
	Size   int
	// Layer is the transformer block the tensor belongs to, -1 for the
	// embedding, Layers for the final norm and the head.
	Layer int
}

// Layout is the order of tensors in the flat buffers: the embedding, then
// blocks 0..L−1 (14 tensors each), then the final norm and the head. Backward
// produces gradients from the end of the buffer towards the start.
func Layout(c Config) []Tensor {
	d, v, f, h, dh := c.Dim, c.Vocab, c.MLPMult*c.Dim, c.Heads, c.HeadDim()
	var ts []Tensor
	off := 0
	add := func(layer int, name string, shape ...int) {
		n := 1
		for _, s := range shape {
			n *= s
		}
		ts = append(ts, Tensor{Name: name, Shape: shape, Offset: off, Size: n, Layer: layer})
		off += n
	}
	add(-1, "model.embed_tokens.weight", v, d)
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		add(l, p+"attn_norm.weight", d)
		add(l, p+"self_attn.q_proj.kernel", d, d)
		add(l, p+"self_attn.k_proj.kernel", d, d)
		add(l, p+"self_attn.v_proj.kernel", d, d)
		add(l, p+"self_attn.q_norm.weight", d)
		add(l, p+"self_attn.k_norm.weight", d)
		// The learned key/value sink (the reference calls it "attention
		// bias"); it is in the bias parameter group, hence the name.
		add(l, p+"self_attn.sink_bias.k", h, dh)
		add(l, p+"self_attn.sink_bias.v", h, dh)
		add(l, p+"self_attn.o_proj.kernel", d, d)
		add(l, p+"mlp_norm.weight", d)
		add(l, p+"mlp.up_proj.kernel", d, f)
		add(l, p+"mlp.up_proj.bias", f)
		add(l, p+"mlp.down_proj.kernel", f, d)
		add(l, p+"mlp.down_proj.bias", d)
	}
	add(c.Layers, "model.norm.weight", d)
	add(c.Layers, "lm_head.kernel", d, v)
	return ts
}

// NumParams is the total number of floats in the flat parameter buffer.
func NumParams(c Config) int {
	ts := Layout(c)
	last := ts[len(ts)-1]
	return last.Offset + last.Size
}

// perLayer is the number of tensors in one block.
const perLayer = 14

// InitHost returns freshly initialised parameters (gidd-spec §5.1) as a host
// slice in Layout order. The values are a pure function of (config, seed).
func InitHost(c Config, seed uint64) []float32 {
	p := make([]float32, NumParams(c))
	rng := rand.New(rand.NewPCG(seed, 0x6769646d6f64656c)) // "gidmodel"
	hidden := c.InitScale / math.Sqrt(float64(c.Dim))
	for _, t := range Layout(c) {
		var std float64
		switch {
		case t.Name == "model.embed_tokens.weight":
			std = c.AuxInitScale
		case t.Name == "lm_head.kernel":
			if !c.ZeroHeadInit {
				std = c.AuxInitScale
			}
		case len(t.Shape) == 2 && !isSink(t.Name):
			std = hidden
		}
		if std == 0 {
			continue
		}
		w := p[t.Offset : t.Offset+t.Size]
		for i := range w {
			w[i] = float32(rng.NormFloat64() * std)
		}
	}
	return p
}

func isSink(name string) bool { return strings.Contains(name, "sink_bias") }

// views of one block's parameters (or gradients) in Layout order.
type blockViews struct {
	attnNorm, wq, wk, wv, qNorm, kNorm, sinkK, sinkV, wo, mlpNorm, wUp, bUp, wDown, bDown compute.Buffer
}

func makeBlockViews(b compute.Backend, flat compute.Buffer, ts []Tensor) blockViews {
	v := func(i int) compute.Buffer { return b.View(flat, ts[i].Offset, ts[i].Size) }
	return blockViews{v(0), v(1), v(2), v(3), v(4), v(5), v(6), v(7), v(8), v(9), v(10), v(11), v(12), v(13)}
}
