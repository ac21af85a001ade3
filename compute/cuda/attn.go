package cuda

import (
	"math"

	"github.com/difftrain/difftrain/compute"
)

// attnBufs are the checked operands of one Attention call.
type attnBufs struct {
	q, k, v, out, sinkK, sinkV, saved *buffer
	noise                             *buffer
	dout, dq, dk, dv, dsinkK, dsinkV  *buffer
}

func (b *Backend) attnCheck(op string, a compute.Attn, backward bool) (attnBufs, bool) {
	var r attnBufs
	if b.err != nil {
		return r, false
	}
	if a.B < 0 || a.N < 0 || a.H < 0 || a.Dh < 0 {
		b.fail(op, "negative shape B=%d N=%d H=%d Dh=%d", a.B, a.N, a.H, a.Dh)
		return r, false
	}
	if !(a.SoftCap >= 0) {
		b.fail(op, "soft-cap %v, must be >= 0", a.SoftCap)
		return r, false
	}
	n := a.B * a.N * a.H * a.Dh
	hd := a.H * a.Dh
	r.q, r.k, r.v = b.f32(op, "Q", a.Q, n), b.f32(op, "K", a.K, n), b.f32(op, "V", a.V, n)
	r.saved = b.f32(op, "Saved", a.Saved, compute.AttnSavedLen(a.B, a.N, a.H))
	if (a.SinkK == nil) != (a.SinkV == nil) {
		b.fail(op, "SinkK and SinkV must both be set or both be nil")
		return r, false
	}
	r.sinkK, _ = b.opt(op, "SinkK", a.SinkK, hd)
	r.sinkV, _ = b.opt(op, "SinkV", a.SinkV, hd)
	if a.Noise != nil {
		r.noise = b.i32(op, "Noise", a.Noise, a.B*a.N)
		if r.noise != nil {
			for t, f := range r.noise.mirror() {
				if f != 0 && f != 1 {
					b.fail(op, "Noise[%d] = %d, want 0 or 1", t, f)
					return r, false
				}
			}
		}
	}
	if !backward {
		r.out = b.f32(op, "Out", a.Out, n)
	} else {
		r.dout, r.dq = b.f32(op, "DOut", a.DOut, n), b.f32(op, "DQ", a.DQ, n)
		r.dk, r.dv = b.f32(op, "DK", a.DK, n), b.f32(op, "DV", a.DV, n)
		if a.SinkK != nil {
			r.dsinkK, r.dsinkV = b.f32(op, "DSinkK", a.DSinkK, hd), b.f32(op, "DSinkV", a.DSinkV, hd)
		}
	}
	return r, b.err == nil
}

// Attention is the forward pass: for each batch element, the scores of all
// heads come from one strided-batched GEMM into Saved's probability area, a
// kernel applies sink, soft-cap, mask and softmax row by row (keeping the
// soft-cap derivative), and a second strided-batched GEMM multiplies by V.
// Saved's layout is described in kernels.cu (k_attn_softmax): token
// probabilities are kept with a row stride of N, so cuBLAS can use its
// tensor-core kernels.
func (b *Backend) Attention(a compute.Attn) {
	const op = "Attention"
	r, ok := b.attnCheck(op, a, false)
	if !ok || a.B*a.N*a.H == 0 {
		return
	}
	B, N, H, Dh := a.B, a.N, a.H, a.Dh
	hd, nn, bn := H*Dh, N*N, B*N
	scale := float32(1 / math.Sqrt(float64(Dh)))
	P := r.saved.ptr()
	G := b.scratchBuf(op, "attnG", H*bn*4)
	if G == 0 {
		return
	}
	for bi := range B {
		bo := uint64(bi*N*hd) * 4
		b.gemm(op, rgemm{tb: true, m: N, n: N, k: Dh, alpha: scale,
			a: r.q.ptr() + bo, lda: hd, sa: Dh, b: r.k.ptr() + bo, ldb: hd, sb: Dh,
			c: P + uint64(bi*H*nn)*4, ldc: N, sc: nn, batch: H})
	}
	b.launch(op, kAttnSoftmax, [3]int{B * H * N}, [3]int{rowBlock(N + 1)}, P, G, pArg(r.q), pArg(r.sinkK),
		pArg(r.noise), iArg(B), iArg(N), iArg(H), iArg(Dh), fArg(scale), fArg(a.SoftCap), bArg(a.CausalPrompt))
	for bi := range B {
		bo := uint64(bi*N*hd) * 4
		b.gemm(op, rgemm{m: N, n: Dh, k: N, alpha: 1,
			a: P + uint64(bi*H*nn)*4, lda: N, sa: nn, b: r.v.ptr() + bo, ldb: hd, sb: Dh,
			c: r.out.ptr() + bo, ldc: hd, sc: Dh, batch: H})
	}
	if r.sinkV != nil {
		b.launch1D(op, kAttnSinkAdd, bn*hd, pArg(r.out), G, pArg(r.sinkV), lArg(bn), iArg(H), iArg(Dh), fArg(1))
	}
}

// AttentionBackward overwrites DQ, DK, DV and accumulates DSinkK, DSinkV,
// one batch element at a time through an [H, N, N] scratch of score
// gradients.
func (b *Backend) AttentionBackward(a compute.Attn) {
	const op = "AttentionBackward"
	r, ok := b.attnCheck(op, a, true)
	if !ok || a.B*a.N*a.H == 0 {
		return
	}
	B, N, H, Dh := a.B, a.N, a.H, a.Dh
	hd, nn, bn := H*Dh, N*N, B*N
	scale := float32(1 / math.Sqrt(float64(Dh)))
	P := r.saved.ptr()
	S := b.scratchBuf(op, "attnS", H*nn*4)
	G0 := b.scratchBuf(op, "attnG", H*bn*4)
	G1 := b.scratchBuf(op, "attnG1", H*bn*4)
	if S == 0 || G0 == 0 || G1 == 0 {
		return
	}
	for bi := range B {
		bo := uint64(bi*N*hd) * 4
		pb := P + uint64(bi*H*nn)*4 // token probabilities of batch element bi
		// dP = dOut·Vᵀ into S.
		b.gemm(op, rgemm{tb: true, m: N, n: N, k: Dh, alpha: 1,
			a: r.dout.ptr() + bo, lda: hd, sa: Dh, b: r.v.ptr() + bo, ldb: hd, sb: Dh,
			c: S, ldc: N, sc: nn, batch: H})
		b.launch(op, kAttnSoftmaxBack, [3]int{H * N}, [3]int{rowBlock(N)}, S, P, G0, G1, pArg(r.dout),
			pArg(r.sinkV), iArg(bi), iArg(B), iArg(N), iArg(H), iArg(Dh))
		// dV = Pᵀ·dOut, dQ = scale·dS·K, dK = scale·dSᵀ·Q.
		b.gemm(op, rgemm{ta: true, m: N, n: Dh, k: N, alpha: 1,
			a: pb, lda: N, sa: nn, b: r.dout.ptr() + bo, ldb: hd, sb: Dh,
			c: r.dv.ptr() + bo, ldc: hd, sc: Dh, batch: H})
		b.gemm(op, rgemm{m: N, n: Dh, k: N, alpha: scale,
			a: S, lda: N, sa: nn, b: r.k.ptr() + bo, ldb: hd, sb: Dh,
			c: r.dq.ptr() + bo, ldc: hd, sc: Dh, batch: H})
		b.gemm(op, rgemm{ta: true, m: N, n: Dh, k: N, alpha: scale,
			a: S, lda: N, sa: nn, b: r.q.ptr() + bo, ldb: hd, sb: Dh,
			c: r.dk.ptr() + bo, ldc: hd, sc: Dh, batch: H})
	}
	if r.sinkK == nil {
		return
	}
	// The sink key and value: dQ += scale·G0·sinkK, dSinkK += scale·G0ᵀ·Q,
	// dSinkV += G1ᵀ·dOut, per head, over all B·N tokens.
	b.launch1D(op, kAttnSinkAdd, bn*hd, pArg(r.dq), G0, pArg(r.sinkK), lArg(bn), iArg(H), iArg(Dh), fArg(scale))
	b.gemm(op, rgemm{m: 1, n: Dh, k: bn, alpha: scale, beta: 1,
		a: G0, lda: bn, sa: bn, b: r.q.ptr(), ldb: hd, sb: Dh, c: r.dsinkK.ptr(), ldc: Dh, sc: Dh, batch: H})
	b.gemm(op, rgemm{m: 1, n: Dh, k: bn, alpha: 1, beta: 1,
		a: G1, lda: bn, sa: bn, b: r.dout.ptr(), ldb: hd, sb: Dh, c: r.dsinkV.ptr(), ldc: Dh, sc: Dh, batch: H})
}
