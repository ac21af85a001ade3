package model

import (
	"fmt"

	"github.com/difftrain/difftrain/compute"
)

// Model holds the parameters, their gradients and the activations of one
// micro-batch of up to MaxBatch sequences, all on one backend.
type Model struct {
	Cfg      Config
	MaxBatch int
	B        compute.Backend

	Tensors []Tensor
	Params  compute.Buffer // flat, Layout order
	Grads   compute.Buffer // flat, same layout; backward accumulates into it

	blocks              []blockViews // parameter views per block
	gblocks             []blockViews // gradient views per block
	emb, normF, head    compute.Buffer
	gEmb, gNormF, gHead compute.Buffer

	a acts
	// the shape of the last Forward, which Backward differentiates
	n            int
	noise        bool
	causalPrompt bool
	allocs       []compute.Buffer

	// Cancel, when set, is checked before every layer of Forward and
	// Backward; an error it returns abandons the pass (a step that must
	// give way to a new ring does not run to its end first).
	Cancel func() error
}

// cancelled reports the Cancel hook's error, wrapped.
func (m *Model) cancelled(pass string, l int) error {
	if m.Cancel == nil {
		return nil
	}
	if err := m.Cancel(); err != nil {
		return fmt.Errorf("model %s: abandoned before layer %d: %w", pass, l, err)
	}
	return nil
}

// layerActs are the activations of one block kept for backward.
type layerActs struct {
	ln1, rstd1    compute.Buffer // [T,d], [T]
	qPre, kPre, v compute.Buffer // projections before QK-norm; v final
	q, k          compute.Buffer // after QK-norm and RoPE
	rstdQ, rstdK  compute.Buffer
	att, saved    compute.Buffer // attention output [T,d], attention scratch
	hMid          compute.Buffer // residual after the attention branch
	ln2, rstd2    compute.Buffer
	u, act        compute.Buffer // up projection + bias [T,f], relu²(u)
}

type acts struct {
	tokens, noise compute.Buffer   // I32 [T]
	h             []compute.Buffer // residual stream h_0..h_L, each [T,d]
	layers        []layerActs
	lnF, rstdF    compute.Buffer
	Logits        compute.Buffer // [T,V]; after the loss, d objective/d logits
	// backward scratch
	dh, dh2, tmp, dA, dB, dC compute.Buffer // [T,d]
	dF, dF2                  compute.Buffer // [T,f]
}

// New allocates a model (parameters zero; call Init or SetParams) with
// activations for micro-batches of up to maxBatch sequences.
func New(b compute.Backend, c Config, maxBatch int) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if maxBatch <= 0 {
		return nil, fmt.Errorf("model: micro-batch size %d, must be positive", maxBatch)
	}
	m := &Model{Cfg: c, MaxBatch: maxBatch, B: b, Tensors: Layout(c)}
	n := NumParams(c)
	alloc := func(dt compute.DType, n int) compute.Buffer {
		buf := b.Alloc(dt, n)
		m.allocs = append(m.allocs, buf)
		return buf
	}
	m.Params = alloc(compute.F32, n)
	m.Grads = alloc(compute.F32, n)
	view := func(flat compute.Buffer, i int) compute.Buffer {
		return b.View(flat, m.Tensors[i].Offset, m.Tensors[i].Size)
	}
	m.emb, m.gEmb = view(m.Params, 0), view(m.Grads, 0)
	for l := 0; l < c.Layers; l++ {
		ts := m.Tensors[1+l*perLayer : 1+(l+1)*perLayer]
		m.blocks = append(m.blocks, makeBlockViews(b, m.Params, ts))
		m.gblocks = append(m.gblocks, makeBlockViews(b, m.Grads, ts))
	}
	last := len(m.Tensors)
	m.normF, m.gNormF = view(m.Params, last-2), view(m.Grads, last-2)
	m.head, m.gHead = view(m.Params, last-1), view(m.Grads, last-1)

	T, d, f := maxBatch*c.SeqLen, c.Dim, c.MLPMult*c.Dim
	fl := func(n int) compute.Buffer { return alloc(compute.F32, n) }
	a := &m.a
	a.tokens, a.noise = alloc(compute.I32, T), alloc(compute.I32, T)
	for l := 0; l <= c.Layers; l++ {
		a.h = append(a.h, fl(T*d))
	}
	for l := 0; l < c.Layers; l++ {
		a.layers = append(a.layers, layerActs{
			ln1: fl(T * d), rstd1: fl(T), qPre: fl(T * d), kPre: fl(T * d), v: fl(T * d),
			q: fl(T * d), k: fl(T * d), rstdQ: fl(T), rstdK: fl(T),
			att: fl(T * d), saved: fl(compute.AttnSavedLen(maxBatch, c.SeqLen, c.Heads)),
			hMid: fl(T * d), ln2: fl(T * d), rstd2: fl(T), u: fl(T * f), act: fl(T * f),
		})
	}
	a.lnF, a.rstdF, a.Logits = fl(T*d), fl(T), fl(T*c.Vocab)
	a.dh, a.dh2, a.tmp, a.dA, a.dB, a.dC = fl(T*d), fl(T*d), fl(T*d), fl(T*d), fl(T*d), fl(T*d)
	a.dF, a.dF2 = fl(T*f), fl(T*f)
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("model: allocating %d parameters and activations for %d sequences: %w", n, maxBatch, err)
	}
	return m, nil
}

// Init sets the parameters to the initialisation of gidd-spec §5.1 drawn from seed.
func (m *Model) Init(seed uint64) error {
	return m.SetParams(InitHost(m.Cfg, seed))
}

// SetParams uploads host parameters in Layout order.
func (m *Model) SetParams(p []float32) error {
	if len(p) != m.Params.Len() {
		return fmt.Errorf("model: %d parameters given, the layout has %d", len(p), m.Params.Len())
	}
	m.B.UploadF32(m.Params, p)
	return m.B.Err()
}

// Logits is the [T, V] logits buffer of the last Forward (T = sequences ×
// SeqLen); the loss overwrites it with the gradient that Backward consumes.
func (m *Model) Logits() compute.Buffer {
	return m.v(m.a.Logits, m.n*m.Cfg.SeqLen*m.Cfg.Vocab)
}

// ZeroGrad clears the gradient buffer before a new global batch.
func (m *Model) ZeroGrad() { m.B.Zero(m.Grads) }

// Tokens returns the I32 input buffers (tokens, noise flags) for n sequences.
func (m *Model) inputs(n int) (tok, noise compute.Buffer) {
	T := n * m.Cfg.SeqLen
	return m.B.View(m.a.tokens, 0, T), m.B.View(m.a.noise, 0, T)
}

// rho is the residual-branch multiplier resid_scale/L.
func (m *Model) rho() float32 { return float32(m.Cfg.ResidScale / float64(m.Cfg.Layers)) }

// headMul is the output multiplier head_scale/d.
func (m *Model) headMul() float32 { return float32(m.Cfg.HeadScale / float64(m.Cfg.Dim)) }

// gemm is C = alpha·op(A)·op(B) + beta·C with packed row-major operands.
func (m *Model) gemm(ta, tb bool, M, N, K int, alpha float32, a, b compute.Buffer, beta float32, c compute.Buffer) {
	m.B.Gemm(compute.Gemm{TransA: ta, TransB: tb, M: M, N: N, K: K, Alpha: alpha, Beta: beta, A: a, B: b, C: c})
}

// v returns the first n elements of buf.
func (m *Model) v(buf compute.Buffer, n int) compute.Buffer { return m.B.View(buf, 0, n) }

func (m *Model) attnArgs(n int, la *layerActs, p *blockViews, noise compute.Buffer) compute.Attn {
	c := m.Cfg
	T := n * c.SeqLen
	at := compute.Attn{
		B: n, N: c.SeqLen, H: c.Heads, Dh: c.HeadDim(), SoftCap: float32(c.SoftCap),
		Q: m.v(la.q, T*c.Dim), K: m.v(la.k, T*c.Dim), V: m.v(la.v, T*c.Dim),
		Noise: noise, Out: m.v(la.att, T*c.Dim), Saved: m.v(la.saved, compute.AttnSavedLen(n, c.SeqLen, c.Heads)),
	}
	if !c.QKNorm {
		at.Q, at.K = m.v(la.qPre, T*c.Dim), m.v(la.kPre, T*c.Dim)
	}
	if c.Sink {
		at.SinkK, at.SinkV = p.sinkK, p.sinkV
	}
	return at
}

// Forward runs the model on n sequences (n ≤ MaxBatch) of tokens; noise is
// the per-token flag of compute.Attn (nil: no prompt mask). The logits are left
// in Logits().
func (m *Model) Forward(tokens, noise []int32, n int, causalPrompt bool) error {
	c := m.Cfg
	if n <= 0 || n > m.MaxBatch {
		return fmt.Errorf("model forward: %d sequences, the model holds activations for 1..%d", n, m.MaxBatch)
	}
	T, d, f := n*c.SeqLen, c.Dim, c.MLPMult*c.Dim
	if len(tokens) != T || (noise != nil && len(noise) != T) {
		return fmt.Errorf("model forward: %d tokens and %d noise flags for %d sequences of %d", len(tokens), len(noise), n, c.SeqLen)
	}
	b := m.B
	tok, nz := m.inputs(n)
	b.UploadI32(tok, tokens)
	var noiseBuf compute.Buffer
	if noise != nil {
		b.UploadI32(nz, noise)
		noiseBuf = nz
	}
	rho, eps := m.rho(), float32(c.NormEps)
	rope := compute.RopeShape{B: n, N: c.SeqLen, H: c.Heads, Dh: c.HeadDim(), Theta: c.RopeTheta}
	h0 := m.v(m.a.h[0], T*d)
	b.Embedding(m.emb, tok, h0, T, d)
	for l := 0; l < c.Layers; l++ {
		if err := m.cancelled("forward", l); err != nil {
			return err
		}
		p, la := &m.blocks[l], &m.a.layers[l]
		hIn, hOut := m.v(m.a.h[l], T*d), m.v(m.a.h[l+1], T*d)
		ln1, qPre, kPre, v := m.v(la.ln1, T*d), m.v(la.qPre, T*d), m.v(la.kPre, T*d), m.v(la.v, T*d)
		b.RMSNorm(hIn, p.attnNorm, ln1, m.v(la.rstd1, T), T, d, eps)
		m.gemm(false, false, T, d, d, 1, ln1, p.wq, 0, qPre)
		m.gemm(false, false, T, d, d, 1, ln1, p.wk, 0, kPre)
		m.gemm(false, false, T, d, d, 1, ln1, p.wv, 0, v)
		q, k := qPre, kPre
		if c.QKNorm {
			q, k = m.v(la.q, T*d), m.v(la.k, T*d)
			b.RMSNorm(qPre, p.qNorm, q, m.v(la.rstdQ, T), T, d, eps)
			b.RMSNorm(kPre, p.kNorm, k, m.v(la.rstdK, T), T, d, eps)
		}
		b.Rope(q, rope)
		b.Rope(k, rope)
		at := m.attnArgs(n, la, p, noiseBuf)
		at.CausalPrompt = causalPrompt
		b.Attention(at)
		// h_mid = h + ρ·(att·Wo)
		hMid := m.v(la.hMid, T*d)
		b.Copy(hMid, hIn)
		m.gemm(false, false, T, d, d, rho, at.Out, p.wo, 1, hMid)
		// h_out = h_mid + ρ·(relu²(ln2·Wup + bup)·Wdown + bdown)
		ln2, u, act := m.v(la.ln2, T*d), m.v(la.u, T*f), m.v(la.act, T*f)
		b.RMSNorm(hMid, p.mlpNorm, ln2, m.v(la.rstd2, T), T, d, eps)
		m.gemm(false, false, T, f, d, 1, ln2, p.wUp, 0, u)
		if c.MLPBias {
			b.AddBias(u, p.bUp, T, f)
		}
		b.ReluSq(u, act)
		down := m.v(m.a.tmp, T*d)
		m.gemm(false, false, T, d, f, 1, act, p.wDown, 0, down)
		if c.MLPBias {
			b.AddBias(down, p.bDown, T, d)
		}
		b.Copy(hOut, hMid)
		b.Axpy(rho, down, hOut)
	}
	m.n, m.noise, m.causalPrompt = n, noise != nil, causalPrompt
	lnF := m.v(m.a.lnF, T*d)
	b.RMSNorm(m.v(m.a.h[c.Layers], T*d), m.normF, lnF, m.v(m.a.rstdF, T), T, d, eps)
	m.gemm(false, false, T, c.Vocab, d, m.headMul(), lnF, m.head, 0, m.v(m.a.Logits, T*c.Vocab))
	if err := b.Err(); err != nil {
		return fmt.Errorf("model forward: %w", err)
	}
	return nil
}

// Backward accumulates into Grads the gradient of the objective whose
// gradient with respect to the logits of the last Forward is in Logits().
// When ready is not nil it is called with [lo, hi) ranges of the flat gradient
// buffer as soon as backward has finished writing them, from the end of the
// buffer to the start (the head first, the embedding last).
func (m *Model) Backward(ready func(lo, hi int)) error {
	c := m.Cfg
	n, causalPrompt, noise := m.n, m.causalPrompt, m.noise
	if n == 0 {
		return fmt.Errorf("model backward: no forward pass to differentiate")
	}
	T, d, f := n*c.SeqLen, c.Dim, c.MLPMult*c.Dim
	b := m.B
	rho, hm := m.rho(), m.headMul()
	rope := compute.RopeShape{B: n, N: c.SeqLen, H: c.Heads, Dh: c.HeadDim(), Theta: c.RopeTheta}
	tok, nz := m.inputs(n)
	var noiseBuf compute.Buffer
	if noise {
		noiseBuf = nz
	}
	dl := m.v(m.a.Logits, T*c.Vocab)
	lnF := m.v(m.a.lnF, T*d)
	// head: logits = hm·lnF·W
	m.gemm(true, false, d, c.Vocab, T, hm, lnF, dl, 1, m.gHead)
	dLnF := m.v(m.a.tmp, T*d)
	m.gemm(false, true, T, d, c.Vocab, hm, dl, m.head, 0, dLnF)
	dh := m.v(m.a.dh, T*d)
	b.RMSNormBackward(m.v(m.a.h[c.Layers], T*d), m.normF, m.v(m.a.rstdF, T), dLnF, dh, m.gNormF, T, d)
	m.signal(ready, len(m.Tensors)-2, len(m.Tensors))

	dh2, tmp := m.v(m.a.dh2, T*d), m.v(m.a.tmp, T*d)
	dA, dB, dC := m.v(m.a.dA, T*d), m.v(m.a.dB, T*d), m.v(m.a.dC, T*d)
	dF, dF2 := m.v(m.a.dF, T*f), m.v(m.a.dF2, T*f)
	for l := c.Layers - 1; l >= 0; l-- {
		if err := m.cancelled("backward", l); err != nil {
			return err
		}
		p, g, la := &m.blocks[l], &m.gblocks[l], &m.a.layers[l]
		hIn, hMid := m.v(m.a.h[l], T*d), m.v(la.hMid, T*d)
		ln1, ln2 := m.v(la.ln1, T*d), m.v(la.ln2, T*d)
		// MLP branch: dbranch = ρ·dh (in tmp).
		b.Copy(tmp, dh)
		b.Scale(tmp, rho)
		if c.MLPBias {
			b.BiasBackward(tmp, g.bDown, T, d)
		}
		m.gemm(true, false, f, d, T, 1, m.v(la.act, T*f), tmp, 1, g.wDown)
		m.gemm(false, true, T, f, d, 1, tmp, p.wDown, 0, dF)
		b.ReluSqBackward(m.v(la.u, T*f), dF, dF2)
		if c.MLPBias {
			b.BiasBackward(dF2, g.bUp, T, f)
		}
		m.gemm(true, false, d, f, T, 1, ln2, dF2, 1, g.wUp)
		m.gemm(false, true, T, d, f, 1, dF2, p.wUp, 0, dA)
		b.RMSNormBackward(hMid, p.mlpNorm, m.v(la.rstd2, T), dA, dB, g.mlpNorm, T, d)
		b.Axpy(1, dB, dh) // dh is now d/d h_mid
		// Attention branch: dbranch = ρ·dh.
		at := m.attnArgs(n, la, p, noiseBuf)
		at.CausalPrompt = causalPrompt
		m.gemm(true, false, d, d, T, rho, at.Out, dh, 1, g.wo)
		dAtt := dA
		m.gemm(false, true, T, d, d, rho, dh, p.wo, 0, dAtt)
		dq, dk, dv := dB, dC, dh2
		at.DOut, at.DQ, at.DK, at.DV = dAtt, dq, dk, dv
		if c.Sink {
			at.DSinkK, at.DSinkV = g.sinkK, g.sinkV
		}
		b.AttentionBackward(at)
		b.RopeBackward(dq, rope)
		b.RopeBackward(dk, rope)
		if c.QKNorm {
			// dq_pre into tmp, dk_pre into dAtt (free now).
			b.RMSNormBackward(m.v(la.qPre, T*d), p.qNorm, m.v(la.rstdQ, T), dq, tmp, g.qNorm, T, d)
			b.RMSNormBackward(m.v(la.kPre, T*d), p.kNorm, m.v(la.rstdK, T), dk, dAtt, g.kNorm, T, d)
			dq, dk = tmp, dAtt
		}
		m.gemm(true, false, d, d, T, 1, ln1, dq, 1, g.wq)
		m.gemm(true, false, d, d, T, 1, ln1, dk, 1, g.wk)
		m.gemm(true, false, d, d, T, 1, ln1, dv, 1, g.wv)
		// d ln1 = dq·Wqᵀ + dk·Wkᵀ + dv·Wvᵀ, into a scratch that is free now.
		dLn1 := tmp
		if c.QKNorm {
			dLn1 = dB
		}
		m.gemm(false, true, T, d, d, 1, dq, p.wq, 0, dLn1)
		m.gemm(false, true, T, d, d, 1, dk, p.wk, 1, dLn1)
		m.gemm(false, true, T, d, d, 1, dv, p.wv, 1, dLn1)
		dx := dh2 // dv is consumed
		b.RMSNormBackward(hIn, p.attnNorm, m.v(la.rstd1, T), dLn1, dx, g.attnNorm, T, d)
		b.Axpy(1, dx, dh) // dh is now d/d h_l
		m.signal(ready, 1+l*perLayer, 1+(l+1)*perLayer)
	}
	b.EmbeddingBackward(m.gEmb, tok, dh, T, d)
	m.signal(ready, 0, 1)
	if err := b.Err(); err != nil {
		return fmt.Errorf("model backward: %w", err)
	}
	return nil
}

// signal reports tensors [i, j) as ready.
func (m *Model) signal(ready func(lo, hi int), i, j int) {
	if ready == nil {
		return
	}
	lo := m.Tensors[i].Offset
	last := m.Tensors[j-1]
	ready(lo, last.Offset+last.Size)
}

// Close frees the model's buffers.
func (m *Model) Close() {
	for _, buf := range m.allocs {
		m.B.Free(buf)
	}
	m.allocs = nil
}
